package cli

import (
	"os"
	"runtime/debug"
)

// GCPercent is the garbage collector's target the worker and the scheduler run with unless
// GOGC is set: their live heap is small (tens of MB at 1,000 slots) and they allocate per
// job, so collecting at 4× the live heap instead of 2× takes about 15% off the worker's CPU
// per job for a few tens of MB more memory (measured with jetjobs-bench, README Benchmarks).
const GCPercent = 400

// TuneGC sets GCPercent, unless the environment sets GOGC.
func TuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(GCPercent)
	}
}
