package dashboard

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves goroutines behind (the
// DevTools reader, the browser process waiter, the fake API server).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
