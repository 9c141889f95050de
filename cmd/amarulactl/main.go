// Command amarulactl is a small operator CLI for an Amarula node's HTTP API:
//
//	amarulactl [--url URL] [--key KEY] profiles list
//	amarulactl profiles create ID [--webhook URL --webhook-secret S]
//	amarulactl profiles qr ID          (prints the pairing code; --png FILE writes the QR image)
//	amarulactl cluster status
//
// URL defaults to $AMARULA_URL or http://127.0.0.1:8080; KEY to
// $AMARULA_ADMIN_KEY. All logic lives in package ctl.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/amarula/amarula/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	code, err := ctl.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "amarulactl:", err)
	}
	os.Exit(code)
}
