// Command wasim runs the WhatsApp Web server simulator on loopback.
//
//	wasim --addr 127.0.0.1:9800 [--root-key <64 hex chars>] [--log-level info]
//	      [--idle-timeout 90s] [--replace-grace 200ms] [--close-delay 500ms]
//
// It prints one line with the websocket URL and the root public key, then
// serves until SIGINT/SIGTERM.
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/amarula/amarula/wasim"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "wasim:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("wasim", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:9800", "listen address")
	rootKey := fs.String("root-key", os.Getenv("WASIM_ROOT_PRIVATE_KEY"), "hex X25519 private key of the certificate root (default: random)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	def := wasim.DefaultConfig()
	idle := fs.Duration("idle-timeout", def.IdleTimeout, "drop a connection that sent nothing for this long")
	grace := fs.Duration("replace-grace", def.ReplaceGrace, "wait this long for an older connection of the same device to close before sending 440 replaced")
	closeDelay := fs.Duration("close-delay", def.StreamErrorCloseDelay, "delay between a terminal stream error and closing the socket")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	cfg := wasim.Config{
		Addr:                  *addr,
		Logger:                slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})),
		IdleTimeout:           *idle,
		ReplaceGrace:          *grace,
		StreamErrorCloseDelay: *closeDelay,
	}
	if *rootKey != "" {
		b, err := hex.DecodeString(*rootKey)
		if err != nil || len(b) != 32 {
			return fmt.Errorf("--root-key must be 64 hex characters")
		}
		cfg.RootPrivateKey = b
	}
	srv, err := wasim.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := srv.Start(ctx); err != nil {
		return err
	}
	fmt.Printf("wasim url=%s root_key=%s\n", srv.URL(), srv.RootKeyHex())
	<-ctx.Done()
	return srv.Close()
}
