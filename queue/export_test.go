package queue

import "time"

// SetFetchPollInterval changes how long an idle Fetch waits before looking again.
func SetFetchPollInterval(f *Fetcher, d time.Duration) { f.pollInterval = d }

// SetFetchIdleHook makes Fetch call hook each time it starts waiting for a wake-up.
func SetFetchIdleHook(f *Fetcher, hook func()) { f.idleHook = hook }
