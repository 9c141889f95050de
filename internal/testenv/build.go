package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	buildMu    sync.Mutex
	buildCache = map[string]string{}
)

// ProjectBinary returns the path of one of this project's binaries
// (amarula-node, wasim): $AMARULA_BIN_DIR/<name> when `make` has built it,
// otherwise it builds ./cmd/<pkg> once per test process into a temp dir.
func ProjectBinary(t testing.TB, name, pkg string) string {
	t.Helper()
	if dir := os.Getenv("AMARULA_BIN_DIR"); dir != "" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := buildCache[name]; ok {
		return p
	}
	root := RepoRoot()
	if root == "" {
		t.Fatal("testenv: cannot find the module root to build " + name)
	}
	dir, err := os.MkdirTemp("", "amarula-bin-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "./"+pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: go build %s: %v\n%s", pkg, err, b)
	}
	buildCache[name] = out
	return out
}
