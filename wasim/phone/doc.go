// Package phone implements the simulated WhatsApp phone used by wasim: the
// Signal identity of a device (in-memory libsignal stores), the ADV device
// identity a primary phone signs when it links a companion (QR and
// phone-code pairing), the message plaintext codec (padding and
// waE2E.Message), builders for what a phone sends, and WhatsApp media
// encryption.
//
// The package owns cryptography and message shapes only. It never touches
// the network, the binary XML node format or the server's routing: package
// wasim turns what this package produces into stanzas. Everything here is
// derived from the pinned whatsmeow client source, which is the authority
// (see ../../../shared/docs/whatsapp-protocol-notes.md §3, §4.3, §7, §8).
//
// A Device is safe for concurrent use; crypto operations on one Device are
// serialized, different Devices run in parallel.
package phone
