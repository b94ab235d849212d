package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/notify"
)

// eventsIdle is how long the events service sleeps when no key waits: a poke wakes it.
const eventsIdle = time.Hour

// maxKeysPerRefresh is the most keys one restricted refresh statement names.
const maxKeysPerRefresh = 1000

// EventRefresh describes one refresh of a table made for events (OnEventRefresh).
type EventRefresh struct {
	Table string
	// Keys is the number of keys it was restricted to; 0 with Full.
	Keys int
	// Full: more keys were waiting than EventOptions.MaxKeys, so it refreshed the whole key
	// source.
	Full bool
	// Added jobs.
	Added int64
}

// source is one subject the events service follows: the table's own notify subject, or the
// inserted subject of a table its key source depends on.
type source struct {
	subject string
	// from names the source in logs: "notify", or the parent table.
	from string
	// renames map a parent's columns onto the target's key columns, one per foreign key to
	// the parent (a key inserted there is a key of each); nil for notify, whose keys name the
	// target's key columns.
	renames []map[string]string
}

// events is the service of a table's leader that refreshes the table at once for the keys it
// is told about (package notify): on its own notify subject, keys of its key source that may
// be new; on the inserted subject of each table its key source depends on (its primary
// parents, or the configured depends_on), rows inserted there, whose keys are renamed along
// the foreign key. Workers publish the inserted keys of the jobs they complete, so a key
// flows through every stage of a pipeline without waiting for any refresh interval.
//
// Keys are checked on arrival (key columns only, typed by their columns: a bad message is
// logged and dropped whole) and accumulate, deduplicated. A step refreshes the table
// restricted to every key waiting (jobsdb's AnyOf: placeholders, never SQL), at most once
// per Coalesce: keys told while a refresh runs, or within Coalesce of its start, go together
// into the next one, so a burst of notifies costs a few refreshes. More than MaxKeys waiting
// make one refresh of the whole key source instead. After each refresh it pokes the
// dispatcher, which publishes the new jobs at once.
type events struct {
	leaderService
	target    *jobsdb.Target
	sources   []source
	refreshed func()

	mu      sync.Mutex
	pending []map[string]any // keys waiting, over the target's key columns
	seen    map[string]bool  // their canonical JSON
	full    bool             // more than MaxKeys were told: refresh everything

	lastRun time.Time // owned by the step
}

func newEvents(o *Options, spec Table, log *slog.Logger, jobs *jobsdb.Jobs, refreshed func()) *events {
	e := &events{leaderService: leaderService{o: o, table: spec.Name, jobs: jobs}, target: jobs.Target(), refreshed: refreshed}
	e.sources = eventSources(o, spec, e.target, log)
	e.init(log, e.runOnce, "refresh for events failed; retrying", slog.LevelError, o.PollInterval, o.ErrorBackoffMax)
	e.begin = e.subscribe
	return e
}

// eventSources are the subjects a table's leader follows: its notify subject, and the
// inserted subjects of its primary parents (a derived key source) or of the tables of
// depends_on (a configured key source).
func eventSources(o *Options, spec Table, t *jobsdb.Target, log *slog.Logger) []source {
	prefix := o.Queue.Prefix
	subj, err := notify.Subject(prefix, t.FullName())
	if err != nil {
		log.Warn("cannot follow notifies", "err", err)
		return nil
	}
	out := []source{{subject: subj, from: "notify"}}
	add := func(table string, columns map[string]string) {
		subj, err := notify.InsertedSubject(prefix, table)
		if err != nil {
			log.Warn("cannot follow inserts into a table the key source depends on", "parent", table, "err", err)
			return
		}
		for i := range out {
			if out[i].subject == subj {
				// Another foreign key to the same table: its keys are renamed both ways.
				out[i].renames = append(out[i].renames, columns)
				return
			}
		}
		out = append(out, source{subject: subj, from: table, renames: []map[string]string{columns}})
	}
	if !t.KeySourceConfigured {
		for _, p := range t.Parents {
			cols := make(map[string]string, len(p.Refs))
			for i, ref := range p.Refs {
				cols[ref] = p.Columns[i]
			}
			add(p.FullName(), cols)
		}
		return out
	}
	for _, dep := range spec.DependsOn {
		cols := make(map[string]string, len(t.KeyColumns))
		for _, c := range t.KeyColumns {
			cols[c.Name] = c.Name
		}
		add(dep, cols)
	}
	return out
}

// subscribe follows the sources for the service's run.
func (e *events) subscribe() (end func()) {
	e.mu.Lock()
	e.pending, e.seen, e.full = nil, map[string]bool{}, false
	e.mu.Unlock()
	var subs []*nats.Subscription
	var from []string
	for _, src := range e.sources {
		sub, err := e.o.NATS.Subscribe(src.subject, func(m *nats.Msg) { e.receive(src, m.Data) })
		if err != nil {
			e.log.Warn("cannot follow events; the periodic refresh still finds their keys", "subject", src.subject, "err", err)
			continue
		}
		subs = append(subs, sub)
		from = append(from, src.subject)
	}
	if len(subs) > 0 {
		e.log.Info("following events", "subjects", strings.Join(from, " "))
	}
	return func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe() // fails only on a closed connection
		}
	}
}

// receive checks a message's keys and adds them to the waiting ones; a bad message is logged
// and dropped whole.
func (e *events) receive(src source, data []byte) {
	keys, err := e.keys(src, data)
	if err != nil {
		e.log.Error("refused an event; no job changed", "subject", src.subject, "err", err, "payload", clipPayload(data))
		return
	}
	if len(keys) == 0 {
		return
	}
	e.mu.Lock()
	for _, k := range keys {
		if e.full {
			break
		}
		id, _ := json.Marshal(k) // sorted by column: equal keys, equal ids
		if e.seen[string(id)] {
			continue
		}
		if len(e.pending) >= e.o.Events.MaxKeys {
			e.full, e.pending, e.seen = true, nil, map[string]bool{}
			break
		}
		e.seen[string(id)] = true
		e.pending = append(e.pending, k)
	}
	e.mu.Unlock()
	e.Poke()
}

// keys decodes a message into keys over the target's key columns, typed by them.
func (e *events) keys(src source, data []byte) ([]map[string]any, error) {
	keys, err := notify.Decode(data)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(keys))
	for i, k := range keys {
		if src.renames == nil {
			v, err := e.target.KeyValues(k)
			if err != nil {
				return nil, fmt.Errorf("key %d: %w", i, err)
			}
			out = append(out, v)
			continue
		}
		for _, columns := range src.renames {
			rk := renameKey(k, columns)
			if len(rk) == 0 {
				// None of the columns the foreign key references: it cannot be narrowed
				// to the target's keys. The periodic refresh finds them.
				e.log.Debug("an inserted key names none of the referenced columns; left to the periodic refresh",
					"from", src.from, "key", i)
				continue
			}
			v, err := e.target.KeyValues(rk)
			if err != nil {
				return nil, fmt.Errorf("key %d, renamed along the foreign key from %s: %w", i, src.from, err)
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// renameKey keeps the columns of k that columns renames, under their new names.
func renameKey(k map[string]any, columns map[string]string) map[string]any {
	out := make(map[string]any, len(k))
	for col, v := range k {
		if to, ok := columns[col]; ok {
			out[to] = v
		}
	}
	return out
}

// take returns the waiting keys and empties the list.
func (e *events) take() ([]map[string]any, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	keys, full := e.pending, e.full
	e.pending, e.full = nil, false
	if len(keys) > 0 || full {
		e.seen = map[string]bool{}
	}
	return keys, full
}

// putBack returns keys whose refresh failed to the waiting ones, for the retry.
func (e *events) putBack(keys []map[string]any, full bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if full || e.full || len(e.pending)+len(keys) > e.o.Events.MaxKeys {
		e.full, e.pending, e.seen = true, nil, map[string]bool{}
		return
	}
	for _, k := range keys {
		id, _ := json.Marshal(k)
		if !e.seen[string(id)] {
			e.seen[string(id)] = true
			e.pending = append(e.pending, k)
		}
	}
}

// runOnce refreshes the table for the waiting keys, unless the last refresh started less
// than Coalesce ago: then it returns when the next may start.
func (e *events) runOnce(ctx context.Context) (time.Time, error) {
	if next := e.lastRun.Add(e.o.Events.Coalesce); time.Now().Before(next) {
		return next, nil
	}
	keys, full := e.take()
	if len(keys) == 0 && !full {
		return time.Now().Add(eventsIdle), nil
	}
	start := time.Now()
	e.lastRun = start
	opts := e.o.refreshOptions()
	opts.StaleTimeout, opts.SkipRecover = 0, true
	var added int64
	if full {
		res, err := e.jobs.Refresh(ctx, opts)
		if err != nil {
			e.putBack(nil, true)
			return time.Time{}, err
		}
		added = res.Added + res.RePended
	}
	for i := 0; i < len(keys) && !full; i += maxKeysPerRefresh {
		chunk := keys[i:min(i+maxKeysPerRefresh, len(keys))]
		opts.Restrictions = []jobsdb.Restriction{{AnyOf: chunk}}
		res, err := e.jobs.Refresh(ctx, opts)
		if err != nil {
			e.putBack(keys[i:], false)
			return time.Time{}, err
		}
		added += res.Added + res.RePended
	}
	took := time.Since(start)
	level := slog.LevelDebug
	if added > 0 {
		level = slog.LevelInfo
	}
	e.log.Log(ctx, level, "refreshed for events", "keys", len(keys), "whole_key_source", full, "added", added, "took", took.Round(time.Microsecond))
	if e.o.OnEventRefresh != nil {
		e.o.OnEventRefresh(EventRefresh{Table: e.table, Keys: len(keys), Full: full, Added: added})
	}
	if added > 0 {
		e.refreshed()
	}
	// Keys told during the refresh wait for the coalescing window, then go together.
	return start.Add(e.o.Events.Coalesce), nil
}

// clipPayload is a refused payload for the log: at most 200 bytes.
func clipPayload(data []byte) string {
	const limit = 200
	if len(data) <= limit {
		return string(data)
	}
	return string(data[:limit]) + "…"
}
