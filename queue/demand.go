package queue

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// demandToken is the last token of a table's demand subject, which, like the wake subject,
// the stream does not capture.
const demandToken = "demand"

// Demand is what a worker reports after each fetch that brought messages, on a core NATS
// subject of the table (<prefix>.<schema>.<table>.demand): how many it took and how many jobs
// it runs at once. The table's scheduler refills the stream as workers drain it, and sizes its
// dispatch window by the fleet's slots, instead of waiting for a timer.
type Demand struct {
	// Worker identifies the reporting worker (a random id per process).
	Worker string
	// Taken is the number of messages the fetch brought.
	Taken int
	// Slots is the number of jobs the worker runs at once.
	Slots int
}

// ReportDemand publishes d on the table's demand subject; it is fire-and-forget, as a lost
// report only delays a refill until the scheduler's next poll.
func (t *Table) ReportDemand(d Demand) error {
	payload := fmt.Appendf(nil, "%s %d %d", d.Worker, d.Taken, d.Slots)
	if err := t.nc.Publish(t.base+"."+demandToken, payload); err != nil {
		return fmt.Errorf("queue: report demand of %s: %w", t.stream, err)
	}
	return nil
}

// SubscribeDemand calls f, on a goroutine of the connection, with every demand report of the
// table; malformed reports are dropped. Unsubscribe with the returned subscription.
func (t *Table) SubscribeDemand(f func(Demand)) (*nats.Subscription, error) {
	sub, err := t.nc.Subscribe(t.base+"."+demandToken, func(m *nats.Msg) {
		if d, ok := parseDemand(m.Data); ok {
			f(d)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("queue: subscribe to the demand of %s: %w", t.stream, err)
	}
	return sub, nil
}

func parseDemand(payload []byte) (Demand, bool) {
	fields := strings.Fields(string(payload))
	if len(fields) != 3 {
		return Demand{}, false
	}
	taken, err1 := strconv.Atoi(fields[1])
	slots, err2 := strconv.Atoi(fields[2])
	if err1 != nil || err2 != nil || taken < 0 || slots < 0 {
		return Demand{}, false
	}
	return Demand{Worker: fields[0], Taken: taken, Slots: slots}, true
}

// The last tokens of a table's event subjects (package notify), which the stream does not
// capture either.
const (
	NotifyToken   = "notify"
	InsertedToken = "inserted"
)

// PublishInserted tells, on the table's inserted subject (<prefix>.<schema>.<table>.inserted),
// that rows with these keys (each a JSON object, as the jobs' messages carry them) were
// inserted into the target table: workers call it once the jobs' successes are committed, so
// that the schedulers of the tables depending on this one refresh them at once. It is
// fire-and-forget; a lost message leaves the keys to the periodic refresh.
func (t *Table) PublishInserted(keys [][]byte) error {
	limit := int(t.nc.MaxPayload())
	if limit <= 0 {
		limit = 1 << 20
	}
	for len(keys) > 0 {
		// As many keys as fit in one message (at least one).
		n, size := 1, 2+len(keys[0])
		for n < len(keys) && size+1+len(keys[n]) <= limit {
			size += 1 + len(keys[n])
			n++
		}
		payload := make([]byte, 0, size)
		payload = append(payload, '[')
		for i, k := range keys[:n] {
			if i > 0 {
				payload = append(payload, ',')
			}
			payload = append(payload, k...)
		}
		payload = append(payload, ']')
		if err := t.nc.Publish(t.base+"."+InsertedToken, payload); err != nil {
			return fmt.Errorf("queue: publish the inserted keys of %s: %w", t.stream, err)
		}
		keys = keys[n:]
	}
	return nil
}

// dueToken is the last token of a table's due subject.
const dueToken = "due"

// PublishDue tells the table's scheduler that a job becomes due after d (a retry that was just
// recorded), so that it publishes the job on time rather than at its next poll. It is
// fire-and-forget, as a lost message only delays the job until that poll.
func (t *Table) PublishDue(d time.Duration) error {
	payload := strconv.AppendInt(nil, max(d, 0).Microseconds(), 10)
	if err := t.nc.Publish(t.base+"."+dueToken, payload); err != nil {
		return fmt.Errorf("queue: publish a due time of %s: %w", t.stream, err)
	}
	return nil
}

// SubscribeDue calls f, on a goroutine of the connection, with the delay of every due message
// of the table (PublishDue), counted from its arrival; malformed messages are dropped.
func (t *Table) SubscribeDue(f func(time.Duration)) (*nats.Subscription, error) {
	sub, err := t.nc.Subscribe(t.base+"."+dueToken, func(m *nats.Msg) {
		us, err := strconv.ParseInt(string(m.Data), 10, 64)
		if err == nil && us >= 0 {
			f(time.Duration(us) * time.Microsecond)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("queue: subscribe to the due times of %s: %w", t.stream, err)
	}
	return sub, nil
}
