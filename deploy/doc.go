// Package deploy holds what ships Amarula: the Dockerfile checks, the
// Grafana dashboard (grafana/amarula.json) and, in k8s/, the Kubernetes
// manifests. Its code only helps the tests check those files against what
// the node actually reads and exposes; nothing here runs in a node.
package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"

	"github.com/amarula/amarula/node"
)

var settingName = regexp.MustCompile(`\bAMARULA_[A-Z0-9_]+\b`)

// NodeSettings returns the AMARULA_* environment variables the node reads,
// taken from its own --help output (the one settings table of
// node/config.go), so manifests and images can be checked against it.
func NodeSettings() (map[string]bool, error) {
	var out bytes.Buffer
	if _, err := node.LoadConfig([]string{"--help"}, func(string) string { return "" }, &out); !errors.Is(err, node.ErrHelp) {
		return nil, fmt.Errorf("node --help: %v", err)
	}
	names := map[string]bool{}
	for _, m := range settingName.FindAllString(out.String(), -1) {
		names[m] = true
	}
	if len(names) < 10 {
		return nil, fmt.Errorf("node --help lists only %d AMARULA_ settings:\n%s", len(names), out.String())
	}
	return names, nil
}
