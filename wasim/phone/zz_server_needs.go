package phone

// Group (sender key) crypto the wasim server needs for simulated phones in
// groups. Written by the server side (see the wasim report); the phone
// package did not cover groups.

import (
	"context"
	"fmt"

	"go.mau.fi/libsignal/groups"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/whatsmeow/types"
)

func senderKeyName(group types.JID, sender types.JID) *protocol.SenderKeyName {
	return protocol.NewSenderKeyName(group.String(), sender.SignalAddress())
}

// GroupEncrypt encrypts plaintext (already padded, see EncodeMessage) for
// group with this device's own sender key, creating it on first use. It
// returns the serialized SenderKeyDistributionMessage (for the
// senderKeyDistributionMessage of a pkmsg/msg to each member device) and
// the skmsg content (SignedSerialize, as whatsmeow sends it).
func (d *Device) GroupEncrypt(group types.JID, plaintext []byte) (skdm, skmsg []byte, err error) {
	defer guard(&err, "group encrypt")
	d.opMu.Lock()
	defer d.opMu.Unlock()
	ctx := context.Background()
	name := senderKeyName(group, d.jid)
	builder := groups.NewGroupSessionBuilder(d.store, Serializer)
	dist, err := builder.Create(ctx, name)
	if err != nil {
		return nil, nil, fmt.Errorf("group encrypt %s: create sender key: %w", group, err)
	}
	ct, err := groups.NewGroupCipher(builder, name, d.store).Encrypt(ctx, plaintext)
	if err != nil {
		return nil, nil, fmt.Errorf("group encrypt %s: %w", group, err)
	}
	return dist.Serialize(), ct.SignedSerialize(), nil
}

// ProcessSenderKeyDistribution stores sender's sender key for group from a
// received SenderKeyDistributionMessage (axolotlSenderKeyDistributionMessage).
func (d *Device) ProcessSenderKeyDistribution(group, sender types.JID, skdm []byte) (err error) {
	defer guard(&err, "process sender key")
	d.opMu.Lock()
	defer d.opMu.Unlock()
	msg, err := protocol.NewSenderKeyDistributionMessageFromBytes(skdm, Serializer.SenderKeyDistributionMessage)
	if err != nil {
		return fmt.Errorf("process sender key of %s in %s: %w", sender, group, err)
	}
	builder := groups.NewGroupSessionBuilder(d.store, Serializer)
	if err := builder.Process(context.Background(), senderKeyName(group, sender), msg); err != nil {
		return fmt.Errorf("process sender key of %s in %s: %w", sender, group, err)
	}
	return nil
}

// GroupDecrypt decrypts an skmsg content sent by sender in group and
// returns the padded plaintext (see DecodeMessage).
func (d *Device) GroupDecrypt(group, sender types.JID, skmsg []byte) (pt []byte, err error) {
	defer guard(&err, "group decrypt")
	d.opMu.Lock()
	defer d.opMu.Unlock()
	msg, err := protocol.NewSenderKeyMessageFromBytes(skmsg, Serializer.SenderKeyMessage)
	if err != nil {
		return nil, fmt.Errorf("group decrypt from %s in %s: %w", sender, group, err)
	}
	name := senderKeyName(group, sender)
	builder := groups.NewGroupSessionBuilder(d.store, Serializer)
	pt, err = groups.NewGroupCipher(builder, name, d.store).Decrypt(context.Background(), msg)
	if err != nil {
		return nil, fmt.Errorf("group decrypt from %s in %s: %w", sender, group, err)
	}
	return pt, nil
}
