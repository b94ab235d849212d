package ctl

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/queue"
)

var streamColumns = []column{
	{"table", "TABLE", "the target table"},
	{"priority", "PRIORITY", "the priority of the subject <prefix>.<schema>.<table>.p<priority>; none (null, -) on the row of stray messages"},
	{"waiting", "WAITING", "messages not yet delivered to a worker; on the stray row, messages in the stream that no consumer will deliver (left behind by a NATS server crash, or not published by jetjobs), which the leading scheduler removes"},
	{"ack_pending", "ACK_PENDING", "messages delivered and not yet acknowledged"},
	{"redelivered", "REDELIVERED", "messages delivered more than once and not yet acknowledged"},
	{"consumer", "CONSUMER", "the durable pull consumer of that priority"},
}

func streamCommand() *command {
	return &command{
		name: "stream", args: "[TABLE...]", maxArgs: -1, argKind: argTables,
		summary: "show the JetStream side: messages waiting per priority, pending acks, redeliveries",
		help: "Shows, for each table (every configured table without arguments), the JetStream state of each priority: " +
			"messages waiting for a worker, messages delivered and not acknowledged, and those delivered more than once, " +
			"and a row without a priority when the stream holds messages that no consumer will deliver. " +
			"MySQL stays the truth: a job is pending there whether or not its message waits here. " +
			"Connects to NATS as the other programs do (--nats, JETJOBS_NATS_URL, the config's nats section). " +
			"The table must exist in MySQL, so that a mistyped name does not create a stream.",
		example: []string{"jobsctl stream", "jobsctl stream lab.__analysis -o json"},
		fields: []outputDoc{{"-o json: an object keyed by table, each an array of priorities with the fields below but table; " +
			"-o csv and text: one row per table and priority:", streamColumns}},
		setup: func(fs *pflag.FlagSet) runFunc {
			return func(ctx context.Context, s *session, args []string) error {
				names, err := s.tables(args)
				if err != nil {
					return err
				}
				all, err := s.openAll(ctx, names)
				if err != nil {
					return err
				}
				cfg, _ := s.config()
				nc, err := s.natsConn(ctx)
				if err != nil {
					return err
				}
				qcfg := streamConfig(cfg)
				r := &records{cols: streamColumns}
				perTable := make(object, 0, len(all))
				for _, j := range all {
					t := j.Target()
					octx, cancel := s.opContext(ctx)
					h, err := func() (queue.Health, error) {
						defer cancel()
						qt, err := queue.Open(octx, nc, t.Schema, t.Name, qcfg)
						if err != nil {
							return queue.Health{}, err
						}
						return qt.Health(octx)
					}()
					if err != nil {
						return fmt.Errorf("stream state of %s: %w", t.FullName(), err)
					}
					first := len(r.rows)
					for _, st := range h.Priorities {
						r.add(t.FullName(), st.Priority, st.Waiting, st.AckPending, st.Redelivered, st.Consumer)
					}
					if h.Stray > 0 {
						r.add(t.FullName(), nil, h.Stray, 0, 0, "")
					}
					list := make([]object, 0, len(r.rows)-first)
					for i := first; i < len(r.rows); i++ {
						list = append(list, r.object(i)[1:])
					}
					perTable = append(perTable, member{t.FullName(), list})
				}
				return s.render(r, func() any { return perTable })
			}
		},
	}
}

// natsConn connects to NATS once, as the other programs do; the connection is closed when the
// command ends.
func (s *session) natsConn(ctx context.Context) (*nats.Conn, error) {
	if s.nc != nil {
		return s.nc, nil
	}
	cfg, err := s.config()
	if err != nil {
		return nil, err
	}
	cctx, cancel := s.connectContext(ctx)
	defer cancel()
	nc, err := connectNATS(cctx, cfg)
	if err != nil {
		return nil, err
	}
	s.nc = nc
	s.closer = append(s.closer, nc.Close)
	return nc, nil
}

// connectNATS connects to the configuration's NATS servers as jobsctl (stream, notify, serve).
func connectNATS(ctx context.Context, cfg config.Config) (*nats.Conn, error) {
	nc, err := queue.Connect(ctx, queue.ConnectOptions{
		URL:         cfg.NATS.URL,
		Credentials: cfg.NATS.Credentials,
		TLSCA:       cfg.NATS.TLSCA,
		TLSCert:     cfg.NATS.TLSCert,
		TLSKey:      cfg.NATS.TLSKey,
		Name:        "jetjobs-jobsctl",
	})
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w (set the URL with --nats, %s or nats.url in the config file)", redactURLs(cfg.NATS.URL), err, config.EnvNATSURL)
	}
	return nc, nil
}

// streamConfig is the stream settings jobsctl opens a table's stream with: those of the
// configuration, but never its storage, so that looking never recreates a stream.
func streamConfig(cfg config.Config) queue.Config {
	return queue.Config{Prefix: cfg.NATS.SubjectPrefix, Replicas: cfg.NATS.Replicas, AckWait: cfg.NATS.AckWait.Duration()}
}

// redactURLs hides passwords and tokens in a comma-separated list of NATS URLs.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
