package storage

import "sync"

// Notifier wakes the goroutines waiting for new events of a profile in
// this process. Adapters close a profile's channel after every commit that
// appended events; Tail implementations take the channel before reading so
// that an append between their read and their wait is never missed. It
// starts no goroutine. The zero value is ready to use.
type Notifier struct {
	mu      sync.Mutex
	closed  bool
	done    chan struct{}
	waiters map[string]chan struct{}
}

// Wait returns a channel that is closed at the next Notify of profile, and
// ErrClosed after Close.
func (n *Notifier) Wait(profile string) (<-chan struct{}, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	if n.waiters == nil {
		n.waiters = map[string]chan struct{}{}
	}
	ch := n.waiters[profile]
	if ch == nil {
		ch = make(chan struct{})
		n.waiters[profile] = ch
	}
	return ch, nil
}

// Notify wakes every waiter of profile. The map only holds profiles
// somebody is waiting on (until the next append).
func (n *Notifier) Notify(profile string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch := n.waiters[profile]; ch != nil {
		close(ch)
		delete(n.waiters, profile)
	}
}

// Done is closed by Close.
func (n *Notifier) Done() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		n.done = make(chan struct{})
		if n.closed {
			close(n.done)
		}
	}
	return n.done
}

// Close wakes every waiter; later Waits fail with ErrClosed.
func (n *Notifier) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.closed = true
	if n.done != nil {
		close(n.done)
	}
	for p, ch := range n.waiters {
		close(ch)
		delete(n.waiters, p)
	}
}
