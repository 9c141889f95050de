package phone_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // the sqlite driver whatsmeow's sqlstore runs on in these tests
	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/libsignal/keys/prekey"
	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"
	waLog "go.mau.fi/whatsmeow/util/log"
	"google.golang.org/protobuf/proto"

	"github.com/amarula/amarula/wasim/phone"
)

// companion is a real whatsmeow client store (sqlstore on in-memory sqlite)
// standing in for a linked WhatsApp Web device. It never connects: tests
// drive whatsmeow's own encryption and decryption code through
// DangerousInternals.
type companion struct {
	t         *testing.T
	container *sqlstore.Container
	dev       *store.Device
	cli       *whatsmeow.Client
}

var dbSeq atomic.Int64

// newCompanion creates an unpaired whatsmeow device.
func newCompanion(t *testing.T) *companion {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("file:wasimphone%d?mode=memory&cache=shared&_foreign_keys=on", dbSeq.Add(1))
	container, err := sqlstore.New(ctx, "sqlite3", name, waLog.Noop)
	if err != nil {
		t.Fatalf("sqlstore: %v", err)
	}
	t.Cleanup(func() { _ = container.Close() })
	dev := container.NewDevice()
	return &companion{t: t, container: container, dev: dev, cli: whatsmeow.NewClient(dev, waLog.Noop)}
}

// qr returns the QR string whatsmeow itself would display for ref.
func (c *companion) qr(ref string) string {
	//lint:ignore SA1019 DangerousInternals is the supported hook for white-box tests
	return c.cli.DangerousInternals().MakeQRData(ref) //nolint:staticcheck
}

// identityPub is the companion's Signal identity public key.
func (c *companion) identityPub() [32]byte { return *c.dev.IdentityKey.Pub }

// pairError mirrors the (code, text) whatsmeow's handlePair answers with.
type pairError struct {
	code int
	text string
}

func (e *pairError) Error() string { return fmt.Sprintf("%d %s", e.code, e.text) }

// handlePair replays whatsmeow's pair.go handlePair on container with the
// same primitives, in the same order, with the same failure answers. On
// success it stores what handlePair stores (Account, ID, LID, the primary
// device identity under the LID device-0 address) and returns the
// <pair-device-sign> <device-identity> content and its key-index.
func (c *companion) handlePair(container []byte, jid, lid types.JID) (selfSigned []byte, keyIndex uint32, err error) {
	ctx := context.Background()
	var hm waAdv.ADVSignedDeviceIdentityHMAC
	if err := proto.Unmarshal(container, &hm); err != nil {
		return nil, 0, &pairError{500, "internal-error"}
	}
	h := hmac.New(sha256.New, c.dev.AdvSecretKey)
	if hm.GetAccountType() == waAdv.ADVEncryptionType_HOSTED {
		h.Write(whatsmeow.AdvHostedAccountSignaturePrefix)
	}
	h.Write(hm.Details)
	if !bytes.Equal(h.Sum(nil), hm.HMAC) {
		return nil, 0, &pairError{401, "hmac-mismatch"}
	}
	var signed waAdv.ADVSignedDeviceIdentity
	if err := proto.Unmarshal(hm.Details, &signed); err != nil {
		return nil, 0, &pairError{500, "internal-error"}
	}
	var details waAdv.ADVDeviceIdentity
	if err := proto.Unmarshal(signed.Details, &details); err != nil {
		return nil, 0, &pairError{500, "internal-error"}
	}
	// verifyAccountSignature
	if len(signed.AccountSignatureKey) != 32 || len(signed.AccountSignature) != 64 {
		return nil, 0, &pairError{401, "signature-mismatch"}
	}
	prefix := whatsmeow.AdvAccountSignaturePrefix
	if details.GetDeviceType() == waAdv.ADVEncryptionType_HOSTED {
		prefix = whatsmeow.AdvHostedAccountSignaturePrefix
	}
	msg := concat(prefix, signed.Details, c.dev.IdentityKey.Pub[:])
	if !ecc.VerifySignature(ecc.NewDjbECPublicKey([32]byte(signed.AccountSignatureKey)), msg, [64]byte(signed.AccountSignature)) {
		return nil, 0, &pairError{401, "signature-mismatch"}
	}
	// generateDeviceSignature
	devMsg := concat(whatsmeow.AdvDeviceSignaturePrefix, signed.Details, c.dev.IdentityKey.Pub[:], signed.AccountSignatureKey)
	devSig := ecc.CalculateSignature(ecc.NewDjbECPrivateKey(*c.dev.IdentityKey.Priv), devMsg)
	signed.DeviceSignature = devSig[:]

	c.dev.Account = proto.Clone(&signed).(*waAdv.ADVSignedDeviceIdentity)
	mainLID := lid
	mainLID.Device = 0
	mainIdentity := [32]byte(signed.AccountSignatureKey)
	signed.AccountSignatureKey = nil
	selfSigned, err = proto.Marshal(&signed)
	if err != nil {
		return nil, 0, &pairError{500, "internal-error"}
	}
	c.dev.ID = &jid
	c.dev.LID = lid
	if err := c.dev.Save(ctx); err != nil {
		return nil, 0, fmt.Errorf("save device: %w", err)
	}
	if err := c.dev.LIDs.PutLIDMapping(ctx, lid.ToNonAD(), jid.ToNonAD()); err != nil {
		return nil, 0, fmt.Errorf("lid mapping: %w", err)
	}
	if err := c.dev.Identities.PutIdentity(ctx, mainLID.SignalAddress().String(), mainIdentity); err != nil {
		return nil, 0, fmt.Errorf("main identity: %w", err)
	}
	return selfSigned, details.GetKeyIndex(), nil
}

// pairWith links the companion to primary p as device index idx, the way
// the server drives a QR pairing, and returns the companion's JIDs.
func (c *companion) pairWith(p *phone.Device, lidUser string, idx uint8) (jid, lid types.JID) {
	c.t.Helper()
	qr, err := phone.ParseQR(c.qr("ref-" + lidUser))
	if err != nil {
		c.t.Fatalf("parse whatsmeow's QR: %v", err)
	}
	container, err := p.SignCompanion(qr.IdentityPub, qr.AdvSecret, 4242, uint32(idx), time.Now().Unix())
	if err != nil {
		c.t.Fatalf("sign companion: %v", err)
	}
	jid = types.NewADJID(p.JID().User, 0, idx)
	lid = types.NewADJID(lidUser, 0, idx)
	lid.Server = types.HiddenUserServer
	selfSigned, keyIndex, err := c.handlePair(container, jid, lid)
	if err != nil {
		c.t.Fatalf("whatsmeow's handlePair checks rejected the container: %v", err)
	}
	if keyIndex != uint32(idx) {
		c.t.Fatalf("key-index %d, want %d", keyIndex, idx)
	}
	acc := p.IdentityPub()
	di, err := phone.VerifyDeviceIdentity(selfSigned, &acc, c.identityPub())
	if err != nil {
		c.t.Fatalf("verify pair-device-sign identity: %v", err)
	}
	if di.KeyIndex != uint32(idx) || di.RawID != 4242 {
		c.t.Fatalf("device identity %+v", di)
	}
	return jid, lid
}

// bundle is the companion's prekey bundle as the server would serve it
// after the companion's prekey upload.
func (c *companion) bundle() *prekey.Bundle {
	c.t.Helper()
	keys, err := c.dev.PreKeys.GetOrGenPreKeys(context.Background(), 1)
	if err != nil {
		c.t.Fatalf("gen prekeys: %v", err)
	}
	spk := c.dev.SignedPreKey
	pk := keys[0]
	b, err := phone.BundleFrom(c.dev.RegistrationID, uint32(c.dev.ID.Device), *c.dev.IdentityKey.Pub,
		spk.KeyID, *spk.Pub, *spk.Signature, &pk.KeyID, pk.Pub)
	if err != nil {
		c.t.Fatalf("bundle: %v", err)
	}
	return b
}

// decrypt runs whatsmeow's decryptDM on an <enc> from sender and returns
// the unpadded plaintext.
func (c *companion) decrypt(from types.JID, encType string, ct []byte) ([]byte, error) {
	node := &waBinary.Node{Tag: "enc", Attrs: waBinary.Attrs{"v": "2", "type": encType}, Content: ct}
	//lint:ignore SA1019 white-box test hook
	pt, _, err := c.cli.DangerousInternals().DecryptDM(context.Background(), node, from, encType == phone.EncTypePreKey, time.Now()) //nolint:staticcheck
	return pt, err
}

// encrypt runs whatsmeow's encryptMessageForDevice for to (processing b
// first when non-nil) and returns the enc type, ciphertext and whether
// whatsmeow would attach <device-identity>.
func (c *companion) encrypt(to types.JID, b *prekey.Bundle, plaintext []byte) (string, []byte, bool, error) {
	//lint:ignore SA1019 white-box test hook
	node, withIdentity, err := c.cli.DangerousInternals().EncryptMessageForDevice(context.Background(), plaintext, to, b, nil, nil) //nolint:staticcheck
	if err != nil {
		return "", nil, false, err
	}
	return node.AttrGetter().String("type"), node.Content.([]byte), withIdentity, nil
}

// deviceIdentity is the <device-identity> whatsmeow attaches to a pkmsg.
func (c *companion) deviceIdentity() []byte {
	//lint:ignore SA1019 white-box test hook
	return c.cli.DangerousInternals().MakeDeviceIdentityNode().Content.([]byte) //nolint:staticcheck
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func mustJID(t *testing.T, s string) types.JID {
	t.Helper()
	j, err := types.ParseJID(s)
	if err != nil {
		t.Fatalf("parse jid %q: %v", s, err)
	}
	return j
}

func lower(s string) string { return strings.ToLower(s) }
