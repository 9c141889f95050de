package signal

import (
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
	"google.golang.org/protobuf/proto"
)

// credsVersion is the format version of creds/self written by this package.
const credsVersion = 1

// credsRecord is the JSON value of creds/self. The first three fields are
// storage.CredsSummary, read by the seam's ListProfilesWithMetadata; the
// rest is everything sqlstore keeps in whatsmeow_device. Private keys are
// stored as-is (32 bytes each, base64 in JSON), like sqlstore does: protect
// the backend, not the value.
type credsRecord struct {
	JID      string `json:"jid,omitempty"`
	LID      string `json:"lid,omitempty"`
	PushName string `json:"push_name,omitempty"`

	Version          int    `json:"version"`
	NoiseKey         []byte `json:"noise_key"`
	IdentityKey      []byte `json:"identity_key"`
	SignedPreKey     []byte `json:"signed_pre_key"`
	SignedPreKeyID   uint32 `json:"signed_pre_key_id"`
	SignedPreKeySig  []byte `json:"signed_pre_key_sig"`
	RegistrationID   uint32 `json:"registration_id"`
	AdvSecretKey     []byte `json:"adv_secret_key"`
	Account          []byte `json:"account,omitempty"` // protobuf waAdv.ADVSignedDeviceIdentity
	Platform         string `json:"platform,omitempty"`
	BusinessName     string `json:"business_name,omitempty"`
	LIDMigrationTime int64  `json:"lid_migration_ts,omitempty"`
	FacebookUUID     string `json:"facebook_uuid,omitempty"`
}

// encodeCreds serialises the persistent part of device.
func encodeCreds(device *store.Device) ([]byte, error) {
	if device.ID == nil {
		return nil, ErrDeviceIDMustBeSet
	}
	if device.NoiseKey == nil || device.IdentityKey == nil || device.SignedPreKey == nil || device.SignedPreKey.Signature == nil {
		return nil, fmt.Errorf("signal: device %s lacks keys", device.ID)
	}
	rec := credsRecord{
		JID:              device.ID.String(),
		PushName:         device.PushName,
		Version:          credsVersion,
		NoiseKey:         device.NoiseKey.Priv[:],
		IdentityKey:      device.IdentityKey.Priv[:],
		SignedPreKey:     device.SignedPreKey.Priv[:],
		SignedPreKeyID:   device.SignedPreKey.KeyID,
		SignedPreKeySig:  device.SignedPreKey.Signature[:],
		RegistrationID:   device.RegistrationID,
		AdvSecretKey:     device.AdvSecretKey,
		Platform:         device.Platform,
		BusinessName:     device.BusinessName,
		LIDMigrationTime: device.LIDMigrationTimestamp,
	}
	if !device.LID.IsEmpty() {
		rec.LID = device.LID.String()
	}
	if device.FacebookUUID != uuid.Nil {
		rec.FacebookUUID = device.FacebookUUID.String()
	}
	if device.Account != nil {
		acc, err := proto.Marshal(device.Account)
		if err != nil {
			return nil, fmt.Errorf("signal: encode account of %s: %w", device.ID, err)
		}
		rec.Account = acc
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("signal: encode creds of %s: %w", device.ID, err)
	}
	return v, nil
}

// decodeCreds parses creds/self into a device without stores.
func decodeCreds(v []byte) (*store.Device, error) {
	var rec credsRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("%w: creds: %v", ErrInvalidValue, err)
	}
	if rec.Version != credsVersion {
		return nil, fmt.Errorf("%w: creds format version %d", ErrInvalidValue, rec.Version)
	}
	if len(rec.NoiseKey) != 32 || len(rec.IdentityKey) != 32 || len(rec.SignedPreKey) != 32 || len(rec.SignedPreKeySig) != 64 {
		return nil, fmt.Errorf("%w: creds key lengths", ErrInvalidValue)
	}
	jid, err := types.ParseJID(rec.JID)
	if err != nil || jid.IsEmpty() {
		return nil, fmt.Errorf("%w: creds jid %q", ErrInvalidValue, rec.JID)
	}
	d := &store.Device{
		ID:                    &jid,
		PushName:              rec.PushName,
		NoiseKey:              keys.NewKeyPairFromPrivateKey([32]byte(rec.NoiseKey)),
		IdentityKey:           keys.NewKeyPairFromPrivateKey([32]byte(rec.IdentityKey)),
		RegistrationID:        rec.RegistrationID,
		AdvSecretKey:          rec.AdvSecretKey,
		Platform:              rec.Platform,
		BusinessName:          rec.BusinessName,
		LIDMigrationTimestamp: rec.LIDMigrationTime,
	}
	sig := [64]byte(rec.SignedPreKeySig)
	d.SignedPreKey = &keys.PreKey{
		KeyPair:   *keys.NewKeyPairFromPrivateKey([32]byte(rec.SignedPreKey)),
		KeyID:     rec.SignedPreKeyID,
		Signature: &sig,
	}
	if rec.LID != "" {
		if d.LID, err = types.ParseJID(rec.LID); err != nil {
			return nil, fmt.Errorf("%w: creds lid %q", ErrInvalidValue, rec.LID)
		}
	}
	if rec.FacebookUUID != "" {
		if d.FacebookUUID, err = uuid.Parse(rec.FacebookUUID); err != nil {
			return nil, fmt.Errorf("%w: creds facebook uuid", ErrInvalidValue)
		}
	}
	// sqlstore always hands out a non-nil Account; so do we.
	d.Account = &waAdv.ADVSignedDeviceIdentity{}
	if len(rec.Account) > 0 {
		if err := proto.Unmarshal(rec.Account, d.Account); err != nil {
			return nil, fmt.Errorf("%w: creds account: %v", ErrInvalidValue, err)
		}
	}
	return d, nil
}
