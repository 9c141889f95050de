package session_test

import (
	"errors"
	"testing"

	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/session/sessiontest"
	"github.com/amarula/amarula/storage"
)

func TestParseRecipient(t *testing.T) {
	tests := []struct {
		in   string
		want types.JID
		bad  bool
	}{
		{in: "+1 (555) 123-4567", want: types.NewJID("15551234567", types.DefaultUserServer)},
		{in: "15551234567", want: types.NewJID("15551234567", types.DefaultUserServer)},
		{in: "15551234567@s.whatsapp.net", want: types.NewJID("15551234567", types.DefaultUserServer)},
		{in: "15551234567:3@s.whatsapp.net", want: types.NewJID("15551234567", types.DefaultUserServer)},
		{in: "120363000000000001@g.us", want: types.NewJID("120363000000000001", types.GroupServer)},
		{in: "123456789@lid", want: types.NewJID("123456789", types.HiddenUserServer)},
		{in: "", bad: true},
		{in: "1234", bad: true},
		{in: "call me maybe", bad: true},
		{in: "+1555123456789012345678", bad: true},
		{in: "@s.whatsapp.net", bad: true},
	}
	for _, tc := range tests {
		got, err := session.ParseRecipient(tc.in)
		if tc.bad {
			if !errors.Is(err, session.ErrInvalidRequest) {
				t.Errorf("ParseRecipient(%q) = %v, %v; want ErrInvalidRequest", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRecipient(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseRootKey(t *testing.T) {
	if _, err := session.ParseRootKey("00"); err == nil {
		t.Fatal("short key accepted")
	}
	if _, err := session.ParseRootKey("zz" + string(make([]byte, 62))); err == nil {
		t.Fatal("non-hex key accepted")
	}
	k, err := session.ParseRootKey(" 0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20\n")
	if err != nil || k[0] != 1 || k[31] != 0x20 {
		t.Fatalf("valid key: %x %v", k, err)
	}
}

func TestConfigValidation(t *testing.T) {
	st := sessiontest.Backends[0].Open(t)
	good := session.Config{Profile: "alice", Store: st}
	tests := []struct {
		name   string
		change func(c *session.Config)
		want   error
	}{
		{"bad profile", func(c *session.Config) { c.Profile = "Alice/../x" }, storage.ErrInvalidProfile},
		{"no store", func(c *session.Config) { c.Store = nil }, nil},
		{"simulator url without root key", func(c *session.Config) { c.WhatsAppURL = "ws://127.0.0.1:1/ws/chat" }, nil},
		{"simulator url with wss", func(c *session.Config) {
			c.WhatsAppURL, c.RootKey = "wss://127.0.0.1:1/ws/chat", *sessiontest.Root.Pub
		}, nil},
		{"simulator url without port", func(c *session.Config) { c.WhatsAppURL, c.RootKey = "ws://localhost/ws/chat", *sessiontest.Root.Pub }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.change(&cfg)
			_, err := session.New(cfg)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("New = %v, want an error (%v)", err, tc.want)
			}
		})
	}
	if _, err := session.New(good); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	sim := good
	sim.WhatsAppURL, sim.RootKey = "ws://127.0.0.1:1/ws/chat", *sessiontest.Root.Pub
	if _, err := session.New(sim); err != nil {
		t.Fatalf("simulator config: %v", err)
	}
	other := sim
	other.RootKey = [32]byte{9}
	if _, err := session.New(other); err == nil {
		t.Fatal("a second, different simulator root key in one process was accepted")
	}
}
