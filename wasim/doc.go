// Package wasim is a loopback WhatsApp Web server simulator that the
// unmodified whatsmeow client connects to: the websocket endpoint with
// WhatsApp framing and the Noise XX handshake (certificate chain signed by
// the simulator's own root), pairing by QR and by phone code, login,
// prekeys, device lists, message and receipt routing with an offline queue,
// media upload and download, stream errors 440/401/515, simulated phones
// (package phone does their cryptography) and an admin HTTP API on the same
// listener.
//
// wasim owns the server side of the protocol and the simulated accounts. It
// never talks to the real WhatsApp, keeps all state in memory, and is not a
// security boundary: anyone who reaches the admin API controls every phone.
//
// Protocol facts come from the pinned whatsmeow source (see
// whatsapp-protocol-notes.md); docs/wasim.md documents the admin and Go API.
package wasim
