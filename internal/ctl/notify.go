package ctl

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/notify"
)

var notifyColumns = []column{
	{"table", "TABLE", "the table notified"},
	{"subject", "SUBJECT", "the NATS subject the keys were published on"},
	{"keys", "KEYS", "the number of keys published"},
}

func notifyCommand() *command {
	return &command{
		name: "notify", args: "TABLE", minArgs: 1, maxArgs: 1, argKind: argTables,
		summary: "tell the scheduler that keys may be new, so their jobs start at once",
		help: "Publishes the keys given with --key on TABLE's notify subject (<prefix>.<schema>.<table>.notify): " +
			"the scheduler leading TABLE refreshes it for exactly these keys at once, and publishes the jobs of those " +
			"that are in its key source and neither computed nor queued yet, instead of waiting for its periodic refresh. " +
			"Each --key is one key, COLUMN=VALUE,... over some or all key columns (a partial key stands for every key it matches); " +
			"repeat --key for several. The keys are checked against TABLE's key columns and types first. " +
			"With --inserted, TABLE is any table (a parent such as a session table) into which rows with these keys were inserted: " +
			"it publishes on <prefix>.<schema>.<table>.inserted, and every scheduled table whose key source depends on TABLE " +
			"is refreshed for them (the values go as text, and each scheduler types them by its own columns). " +
			"A notify that no scheduler hears (none runs) is not an error: the periodic refresh finds the keys. " +
			"Connects to NATS as the other programs do (--nats, JETJOBS_NATS_URL, the config's nats section).",
		example: []string{
			"jobsctl notify lab.__analysis --key subject_id=3,session_id=7",
			"jobsctl notify lab.__analysis --key subject_id=3,session_id=7 --key subject_id=4,session_id=1",
			"jobsctl notify lab.session --inserted --key subject_id=3,session_id=7",
		},
		fields: []outputDoc{{"-o json: one object; -o csv and text: one row:", notifyColumns}},
		setup: func(fs *pflag.FlagSet) runFunc {
			var keys []string
			var inserted bool
			fs.StringArrayVar(&keys, "key", nil, "one key, `COLUMN=VALUE,...` (some or all key columns); repeat for several keys. "+
				"Values are typed by their column; quote a value with \"...\" when it holds a comma, '=' or spaces")
			describeDefault(fs, "key", "none (at least one is required)")
			fs.BoolVar(&inserted, "inserted", false, "TABLE is a table into which rows with these keys were inserted: refresh every scheduled table that depends on it")
			return func(ctx context.Context, s *session, args []string) error {
				if len(keys) == 0 {
					return cli.Usagef("--key is required: give the keys that may be new, e.g. --key subject_id=3,session_id=7")
				}
				cfg, err := s.config()
				if err != nil {
					return err
				}
				table := args[0]
				var maps []map[string]any
				var subject string
				if inserted {
					for _, k := range keys {
						pairs, err := parseKeyFlags([]string{k})
						if err != nil {
							return err
						}
						m := make(map[string]any, len(pairs))
						for _, p := range pairs {
							m[p.col] = p.val
						}
						maps = append(maps, m)
					}
					if subject, err = notify.InsertedSubject(cfg.NATS.SubjectPrefix, table); err != nil {
						return &cli.UsageError{Err: err}
					}
				} else {
					j, err := s.jobs(ctx, table)
					if err != nil {
						return err
					}
					t := j.Target()
					table = t.FullName()
					for _, k := range keys {
						eq, err := partialKey(t, []string{k})
						if err != nil {
							return err
						}
						v, err := t.KeyValues(eq)
						if err != nil {
							return &cli.UsageError{Err: fmt.Errorf("--key %q: %w", k, err)}
						}
						maps = append(maps, v)
					}
					if subject, err = notify.Subject(cfg.NATS.SubjectPrefix, table); err != nil {
						return err
					}
				}
				nc, err := s.natsConn(ctx)
				if err != nil {
					return err
				}
				octx, cancel := s.opContext(ctx)
				defer cancel()
				publish := notify.Keys
				if inserted {
					publish = notify.Inserted
				}
				if err := publish(octx, nc, cfg.NATS.SubjectPrefix, table, maps...); err != nil {
					return err
				}
				r := &records{cols: notifyColumns}
				r.add(table, subject, len(maps))
				return s.render(r, func() any { return r.object(0) })
			}
		},
	}
}
