package cli

import "time"

// RateWindow is how far back a RateEstimator looks to compute a rate: long enough to smooth
// batches, short enough to follow a change in the number of workers.
const RateWindow = 30 * time.Second

// Rate is how fast unfinished jobs finish, and the time left at that rate.
type Rate struct {
	PerSecond float64       // jobs finished per second; meaningful when Known
	Known     bool          // false until two samples exist
	ETA       time.Duration // time until none is left; meaningful when ETAKnown
	ETAKnown  bool          // true when none is left, or the rate is known and above 0
}

// RateEstimator turns successive counts of unfinished (pending + reserved) jobs into a Rate,
// as jobsctl watch and the web console show it. The zero value is ready to use; it is not safe
// for concurrent use.
type RateEstimator struct {
	samples []rateSample
}

type rateSample struct {
	at        time.Time
	remaining int64
}

// Observe records the number of unfinished jobs at a time and returns the rate at which they
// decreased over the last RateWindow (jobs added meanwhile lower it), and the time left at that
// rate.
func (e *RateEstimator) Observe(at time.Time, remaining int64) Rate {
	e.samples = append(e.samples, rateSample{at, remaining})
	for len(e.samples) > 2 && at.Sub(e.samples[1].at) >= RateWindow {
		e.samples = e.samples[1:]
	}
	if remaining == 0 && len(e.samples) < 2 {
		return Rate{ETAKnown: true}
	}
	if len(e.samples) < 2 {
		return Rate{}
	}
	first := e.samples[0]
	dt := at.Sub(first.at).Seconds()
	if dt <= 0 {
		return Rate{}
	}
	rate := max(float64(first.remaining-remaining)/dt, 0)
	switch {
	case remaining == 0:
		return Rate{PerSecond: rate, Known: true, ETAKnown: true}
	case rate > 0:
		return Rate{PerSecond: rate, Known: true, ETA: time.Duration(float64(remaining) / rate * float64(time.Second)), ETAKnown: true}
	default:
		return Rate{PerSecond: rate, Known: true}
	}
}
