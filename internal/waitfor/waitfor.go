// Package waitfor is the tests' one way to wait for the system to reach a state: poll a
// condition until it holds or a deadline passes, never sleep a fixed time and hope.
package waitfor

import (
	"testing"
	"time"
)

// Timeout is the deadline of True: generous, because CI is a loaded two-core machine and a
// deadline only matters when something is wrong.
const Timeout = 60 * time.Second

// interval is how often the condition is polled.
const interval = 20 * time.Millisecond

// True polls cond until it returns true, failing t (with what was awaited) after Timeout.
func True(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Timeout, what, cond)
}

// Within polls cond until it returns true, failing t after d.
func Within(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(interval)
	}
}
