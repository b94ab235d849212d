package ctl

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/jetjobs/jetjobs/internal/cli"
)

const (
	defaultWatchInterval = 2 * time.Second
	minWatchInterval     = 100 * time.Millisecond
)

var watchColumns = append(append([]column{
	{"time", "TIME", "when the counts were read"},
}, progressColumns...),
	column{"rate", "RATE", "jobs finished per second over the last 30 s: the decrease of pending+reserved (jobs added meanwhile lower it); null until the second update"},
	column{"eta_seconds", "ETA", "seconds until pending+reserved reach 0 at that rate; 0 when none are left; null while the rate is unknown or 0"},
)

func watchCommand() *command {
	return &command{
		name: "watch", args: "[TABLE...]", maxArgs: -1, argKind: argTables,
		summary: "show live progress with rates and an ETA until Ctrl-C",
		help: "Reads the progress of each table (every configured table without arguments) every --interval and shows it with the " +
			"rate at which jobs finish and the time left at that rate. On a terminal the table is redrawn in place; otherwise " +
			"(a pipe, a file, a CI log) one line per table and update is printed, with -o json one JSON object per line. " +
			"Ctrl-C stops it (exit 0). A database error is reported on stderr and the next update tries again.",
		example: []string{"jobsctl watch", "jobsctl watch lab.__analysis --interval 10s", "jobsctl watch -o json --count 1"},
		fields:  []outputDoc{{"-o json: one object per line, per table and update; -o csv and lines: one row per table and update:", watchColumns}},
		setup: func(fs *pflag.FlagSet) runFunc {
			var interval time.Duration
			var count int
			fs.DurationVar(&interval, "interval", defaultWatchInterval, "time between updates, e.g. 500ms, 2s, 1m")
			fs.IntVar(&count, "count", 0, "stop after `N` updates (0: until interrupted)")
			return func(ctx context.Context, s *session, args []string) error {
				if interval < minWatchInterval {
					return cli.Usagef("--interval %v: want at least %v", interval, minWatchInterval)
				}
				if count < 0 {
					return cli.Usagef("--count %d: want 0 (until interrupted) or more", count)
				}
				names, err := s.tables(args)
				if err != nil {
					return err
				}
				all, err := s.openAll(ctx, names)
				if err != nil {
					return err
				}
				w := &watcher{s: s, interval: interval, estimators: make([]rateEstimator, len(names))}
				w.redraw = s.g.output == formatText && s.env.Terminal(s.env.Stdout)
				ticker := time.NewTicker(interval)
				defer ticker.Stop()
				for n := 1; ; n++ {
					now := s.env.Now()
					r := &records{cols: watchColumns}
					for i, j := range all {
						octx, cancel := s.opContext(ctx)
						p, err := j.Progress(octx)
						cancel()
						if ctx.Err() != nil {
							return nil
						}
						if err != nil {
							fmt.Fprintf(s.env.Stderr, "jobsctl: watch: progress of %s: %v\n", names[i], err)
							continue
						}
						rate, eta := w.estimators[i].observe(now, p.Pending+p.Reserved)
						r.add(now, names[i], p.Pending, p.Reserved, p.Success, p.Error, p.Ignore, p.Total, rate, eta)
					}
					if err := w.show(r, now); err != nil {
						return err
					}
					if count > 0 && n >= count {
						return nil
					}
					select {
					case <-ctx.Done():
						return nil
					case <-ticker.C:
					}
				}
			}
		},
	}
}

// watcher draws successive updates.
type watcher struct {
	s          *session
	interval   time.Duration
	redraw     bool // a terminal: redraw the frame in place
	lines      int  // lines of the last frame
	started    bool // header written (lines, CSV)
	widths     []int
	estimators []rateEstimator
}

func (w *watcher) show(r *records, now time.Time) error {
	s := w.s
	switch {
	case s.g.output == formatJSON:
		for i := range r.rows {
			if err := writeJSONLine(s.env.Stdout, r.object(i)); err != nil {
				return err
			}
		}
		return nil
	case s.g.output == formatCSV:
		noHeaders := s.g.noHeaders || w.started
		w.started = true
		return writeCSV(s.env.Stdout, r, noHeaders)
	case w.redraw:
		return w.frame(r, now)
	default:
		return w.lineMode(r)
	}
}

// frame redraws the whole table in place: the cursor goes back to the first line of the
// previous frame, which is cleared, and the new frame is written in one write.
func (w *watcher) frame(r *records, now time.Time) error {
	var content bytes.Buffer
	fmt.Fprintf(&content, "jobsctl watch: every %v, %s (Ctrl-C to stop)\n", w.interval, now.In(w.s.env.Location).Format(textTimeLayout))
	frame := &records{cols: withHeads(watchColumns, map[string]string{
		"table": "TABLE", "pending": "PENDING", "reserved": "RESERVED", "success": "SUCCESS",
		"error": "ERROR", "ignore": "IGNORE", "total": "TOTAL", "rate": "RATE", "eta_seconds": "ETA",
	}), rows: r.rows}
	if err := writeTable(&content, frame, w.s.g.noHeaders, w.s.env.Location); err != nil {
		return err
	}
	var out bytes.Buffer
	if w.lines > 0 {
		fmt.Fprintf(&out, "\x1b[%dF\x1b[J", w.lines)
	}
	out.Write(content.Bytes())
	w.lines = bytes.Count(content.Bytes(), []byte("\n"))
	_, err := w.s.env.Stdout.Write(out.Bytes())
	return err
}

// lineMode prints one aligned line per table and update, the header once.
func (w *watcher) lineMode(r *records) error {
	s := w.s
	cells := make([][]string, 0, len(r.rows)+1)
	head := make([]string, len(r.cols))
	for i, c := range r.cols {
		head[i] = c.head
	}
	if !w.started && !s.g.noHeaders {
		cells = append(cells, head)
	}
	for _, row := range r.rows {
		line := make([]string, len(row))
		for i, v := range row {
			line[i] = textValue(v, s.env.Location)
		}
		cells = append(cells, line)
	}
	if w.widths == nil {
		w.widths = make([]int, len(r.cols))
		for i := range head {
			w.widths[i] = len(head[i])
		}
	}
	for _, line := range cells {
		for i, c := range line {
			w.widths[i] = max(w.widths[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	for _, line := range cells {
		for i, c := range line {
			if i == len(line)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", w.widths[i]-len([]rune(c))+2))
		}
		b.WriteByte('\n')
	}
	w.started = true
	_, err := s.env.Stdout.Write([]byte(b.String()))
	return err
}

// rateEstimator turns successive counts of unfinished jobs into a rate and an ETA: the
// estimator the web console uses too (cli.RateEstimator), as output cells.
type rateEstimator struct{ cli.RateEstimator }

// observe records the number of unfinished (pending + reserved) jobs at a time and returns the
// rate at which they decreased over the last cli.RateWindow, and the time left at that rate.
func (e *rateEstimator) observe(at time.Time, remaining int64) (rateCell, etaCell) {
	r := e.Observe(at, remaining)
	return rateCell{r.PerSecond, r.Known}, etaCell{r.ETA, r.ETAKnown}
}
