package api_test

import (
	"github.com/amarula/amarula/api"
	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/webhook"
)

// The real implementations plug into Config without glue. (The session
// registry is checked where it lives once it exists: it must satisfy
// api.Sessions and api.Owners.)
var (
	_ api.Profiles = (catalog.Catalog)(nil)
	_ api.Messages = (*msgstore.Store)(nil)
	_ api.Events   = (storage.Store)(nil)
	_ api.KV       = (storage.Store)(nil)
	_ api.Fences   = (storage.Store)(nil)
	_ api.Webhooks = (*webhook.DeadLetters)(nil)
	_ webhook.Log  = (storage.Store)(nil)
	_ webhook.KV   = (storage.Store)(nil)
)
