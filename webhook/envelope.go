// Package webhook delivers a profile's events to the HTTP endpoint configured
// for it: signed (HMAC-SHA256), strictly in log order, at least once, with
// exponential retry, and with a dead-letter list for events that exhausted
// their retry budget.
//
// The deliverer (Run) reads the profile's durable event log from the
// persisted consumer cursor "webhook" and acknowledges an event only after a
// 2xx answer (or after parking it), so a crash or a failover re-sends at most
// the events that were in flight: receivers deduplicate on the
// X-Amarula-Delivery header (the event id).
//
// The package owns the webhook wire format (Envelope, Sign, Verify), the
// per-profile delivery loop and the dead-letter namespace. It never decides
// which node runs a profile's deliverer: the caller (the node that owns the
// profile) starts Run and cancels it, and a fenced write stops it on its own.
// It never logs webhook secrets, event bodies or target URLs.
package webhook

import (
	"encoding/json"
	"time"

	"github.com/amarula/amarula/storage"
)

// Envelope is the JSON object of one event, as sent to webhooks and served by
// the events API:
//
//	{"id":"<cursor>","profile":"alice","type":"message.received","time":"RFC3339","data":{…}}
type Envelope struct {
	ID      string          `json:"id"`
	Profile string          `json:"profile"`
	Type    string          `json:"type"`
	Time    string          `json:"time"`
	Data    json.RawMessage `json:"data"`
}

// NewEnvelope wraps a stored event of profile. Data that is not valid JSON
// (which the gateway never writes) is carried as a JSON string rather than
// dropped, so the envelope itself is always valid JSON.
func NewEnvelope(profile string, ev storage.Event) Envelope {
	data := json.RawMessage(ev.Data)
	switch {
	case len(ev.Data) == 0:
		data = json.RawMessage("null")
	case !json.Valid(ev.Data):
		b, _ := json.Marshal(string(ev.Data))
		data = b
	}
	return Envelope{
		ID:      ev.Cursor,
		Profile: profile,
		Type:    ev.Type,
		Time:    ev.Time.UTC().Format(time.RFC3339),
		Data:    data,
	}
}

// Marshal returns the envelope's JSON encoding. It cannot fail for envelopes
// built by NewEnvelope.
func (e Envelope) Marshal() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		// Only reachable with hand-built invalid Data; keep the body valid.
		e.Data = json.RawMessage("null")
		b, _ = json.Marshal(e)
	}
	return b
}
