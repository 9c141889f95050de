// Command amarula-node runs one Amarula node. All logic lives in package
// node; this file parses configuration and runs until SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/amarula/amarula/node"
)

func main() {
	cfg, err := node.LoadConfig(os.Args[1:], os.Getenv, os.Stdout)
	if errors.Is(err, node.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "amarula-node:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	m := node.New(cfg, nil)
	if err := m.Open(ctx); err != nil {
		m.Logger.Error("start failed", "err", err)
		os.Exit(1)
	}
	if err := m.Run(ctx); err != nil {
		m.Logger.Error("stopped with error", "err", err)
		os.Exit(1)
	}
}
