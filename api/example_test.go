package api_test

import (
	"context"
	"log"
	"net/http"

	"github.com/amarula/amarula/api"
	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/storage/bolt"
	"github.com/amarula/amarula/webhook"
	"github.com/prometheus/client_golang/prometheus"
)

// ExampleNew wires the API over the embedded store the way a single node
// does. Sessions comes from the session registry (here a stand-in).
func ExampleNew() {
	st, err := bolt.Open("/tmp/amarula-example", bolt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	cat := catalog.NewLocal(st)
	reg := prometheus.NewRegistry()
	srv, err := api.New(api.Config{
		AdminKey: "change-me",
		Profiles: cat,
		Sessions: newFakeSessions(), // the registry in a real node
		Messages: msgstore.New(st),
		Events:   st,
		KV:       st,
		Fences:   st,
		Webhooks: &webhook.DeadLetters{KV: st, Token: st.Fence, Target: webhook.CatalogTarget(cat)},
		Readiness: api.ReadyFunc(func(ctx context.Context) error {
			return st.Ping(ctx)
		}),
		Gatherer:   reg,
		Registerer: reg,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close() // ends WebSocket streams after http.Server.Shutdown
	_ = &http.Server{Addr: ":8080", Handler: srv}
}
