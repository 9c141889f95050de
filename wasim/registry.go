package wasim

import (
	"encoding/binary"
	"sync"
	"time"

	"go.mau.fi/whatsmeow/types"
)

// account is one WhatsApp user: a simulated phone (device 0) plus the
// companion devices it linked.
type account struct {
	user  string // phone number
	lid   string // LID user
	name  string
	phone *Phone

	// devices, nextIdx and watchers are guarded by Server.mu.
	devices map[uint16]*device
	nextIdx uint16
	// watchers are the companions that fetched this account's device list
	// (and may cache it): they get a devices notification when it changes.
	watchers map[*device]struct{}
}

func (a *account) jid() types.JID    { return types.NewJID(a.user, types.DefaultUserServer) }
func (a *account) lidJID() types.JID { return types.NewJID(a.lid, types.HiddenUserServer) }

// device is one linked companion. It is kept compact: the one-time prekeys
// sit in one byte slab and queued stanzas are stored marshalled.
type device struct {
	acct     *account
	idx      uint16
	noisePub [32]byte
	regID    uint32
	identity [32]byte
	skeyID   uint32
	skey     [32]byte
	skeySig  [64]byte
	keyIndex uint32
	// deviceIdentity is the ADVSignedDeviceIdentity the companion signed.
	deviceIdentity []byte

	mu      sync.Mutex
	linked  bool // pair-device-sign received
	removed bool
	prekeys []byte // preKeyRecordSize-byte records: be24 id | 32-byte pub
	conn    *conn
	active  bool // conn sent <passive><active/>: live delivery allowed
	pending []queued
	// stats
	connectionsTotal uint64
	replacedTotal    uint64
	overlap          time.Duration
	openConns        int
	overlapSince     time.Time
}

const preKeyRecordSize = 3 + 32

// queued is one stanza waiting for the device's receipt or ack.
type queued struct {
	kind byte // 'm' message, 'r' receipt, 'n' notification
	id   string
	data []byte // marshalled node
}

func (d *device) jid() types.JID {
	return types.JID{User: d.acct.user, Device: d.idx, Server: types.DefaultUserServer}
}

func (d *device) lidJID() types.JID {
	return types.JID{User: d.acct.lid, Device: d.idx, Server: types.HiddenUserServer}
}

// takePreKey pops one one-time prekey. Caller holds d.mu.
func (d *device) takePreKey() (id uint32, pub []byte, ok bool) {
	if len(d.prekeys) < preKeyRecordSize {
		return 0, nil, false
	}
	rec := d.prekeys[:preKeyRecordSize]
	d.prekeys = d.prekeys[preKeyRecordSize:]
	if len(d.prekeys) == 0 {
		d.prekeys = nil
	}
	id = uint32(rec[0])<<16 | uint32(rec[1])<<8 | uint32(rec[2])
	return id, rec[3:], true
}

func (d *device) preKeyCount() int { return len(d.prekeys) / preKeyRecordSize }

func be32(v uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, v)
	return b
}

func be24(v uint32) []byte { return []byte{byte(v >> 16), byte(v >> 8), byte(v)} }

func parseBE(b []byte) uint32 {
	var v uint32
	for _, x := range b {
		v = v<<8 | uint32(x)
	}
	return v
}
