// Command screenshot takes the README's pictures of the web console: it builds a small
// pipeline in a scratch database (jetjobs_console), lets a simulated fleet compute it for a
// few seconds (reservations and outcomes through jobsdb, as workers record them; a real
// leader election; due jobs published to an embedded NATS server as the scheduler does),
// serves the console over it and photographs it with headless Chromium.
//
//	go run ./internal/web/screenshot -o docs
//
// MySQL is JETJOBS_MYSQL_DSN (default root@tcp(127.0.0.1:3306)/), or a private server started
// from the mariadbd binary when none answers. Chromium: see package browsertest.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-sql-driver/mysql"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/browsertest"
	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/internal/mysqlserver"
	"github.com/jetjobs/jetjobs/internal/web"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

const schema = "jetjobs_console"

func main() {
	out := flag.String("o", "docs", "directory to write web-console.png, web-console-jobs.png and web-console-job.png into")
	run := flag.Duration("run", 12*time.Second, "how long the simulated fleet computes before the pictures")
	flag.Parse()
	if err := shoot(*out, *run); err != nil {
		log.Fatal(err)
	}
}

func shoot(out string, run time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dsn, stop, err := server()
	if err != nil {
		return err
	}
	defer stop()
	admin, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer admin.Close()
	for _, q := range []string{
		"DROP DATABASE IF EXISTS " + schema,
		"CREATE DATABASE " + schema,
		"CREATE TABLE " + schema + ".subject (subject_id int NOT NULL, PRIMARY KEY (subject_id))",
		"CREATE TABLE " + schema + ".session (subject_id int NOT NULL, session_id int NOT NULL, PRIMARY KEY (subject_id, session_id), FOREIGN KEY (subject_id) REFERENCES " + schema + ".subject (subject_id))",
		"CREATE TABLE " + schema + ".__analysis (subject_id int NOT NULL, session_id int NOT NULL, result float NOT NULL DEFAULT 0, PRIMARY KEY (subject_id, session_id), FOREIGN KEY (subject_id, session_id) REFERENCES " + schema + ".session (subject_id, session_id))",
		"CREATE TABLE " + schema + ".__spikes (subject_id int NOT NULL, session_id int NOT NULL, spikes int NOT NULL DEFAULT 0, PRIMARY KEY (subject_id, session_id), FOREIGN KEY (subject_id, session_id) REFERENCES " + schema + ".session (subject_id, session_id))",
		"INSERT INTO " + schema + ".subject SELECT seq FROM " + schema + ".seq_1_to_12",
		"INSERT INTO " + schema + ".session SELECT s.seq, n.seq FROM " + schema + ".seq_1_to_12 s JOIN " + schema + ".seq_1_to_40 n",
	} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	defer admin.Exec("DROP DATABASE IF EXISTS " + schema)

	db, err := jobsdb.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	tables := []string{schema + ".__analysis", schema + ".__spikes"}
	jobs := map[string]*jobsdb.Jobs{}
	for _, name := range tables {
		t, err := jobsdb.Inspect(ctx, db, name, "")
		if err != nil {
			return err
		}
		j := jobsdb.New(db, t, jobsdb.Options{KeepCompleted: true})
		if _, err := j.Refresh(ctx, jobsdb.RefreshOptions{Priority: config.DefaultPriority}); err != nil {
			return err
		}
		if _, err := db.ExecContext(ctx, "UPDATE "+schema+".`"+t.JobsName+"` SET priority = 1 WHERE subject_id = 8"); err != nil {
			return err
		}
		jobs[name] = j
	}

	// NATS: an embedded server; the due jobs published as the scheduler publishes them.
	storeDir, err := os.MkdirTemp("", "jetjobs-screenshot-nats-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(storeDir)
	ns, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: storeDir})
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	nc, err := queue.Connect(ctx, queue.ConnectOptions{URL: ns.ClientURL(), Name: "jetjobs-screenshot"})
	if err != nil {
		return err
	}
	defer nc.Close()
	streams := map[string]*queue.Table{}
	for _, name := range tables {
		t := jobs[name].Target()
		qt, err := queue.Open(ctx, nc, t.Schema, t.Name, queue.Config{})
		if err != nil {
			return err
		}
		streams[name] = qt
	}

	// A scheduler's leadership of the first table: the real election.
	quiet := slog.New(slog.DiscardHandler)
	el := leadership.New(db, leadership.LockName(tables[0]), leadership.Config{Logger: quiet}, func(ctx context.Context) { <-ctx.Done() })
	if err := el.Start(ctx); err != nil {
		return err
	}
	defer el.Stop()

	srv, err := web.New(web.Options{
		Tables:   tables,
		Open:     func(ctx context.Context, name string) (*jobsdb.Jobs, error) { return jobs[name], nil },
		DB:       db,
		LockName: leadership.LockName,
		Stream: func(ctx context.Context, t *jobsdb.Target) (queue.Health, error) {
			return streams[t.FullName()].Health(ctx)
		},
		AllowActions: true,
		Interval:     500 * time.Millisecond,
		Logger:       quiet,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	srvCtx, stopSrv := context.WithCancel(ctx)
	defer stopSrv()
	go srv.Run(srvCtx)
	url := "http://" + ln.Addr().String()

	bctx, closeBrowser, err := browsertest.Start(ctx, must(os.MkdirTemp("", "jetjobs-screenshot-chromium-")), 1360, 1000)
	if err != nil {
		return err
	}
	defer closeBrowser()
	if err := chromedp.Do(bctx, chromedp.Navigate(url+"/"), chromedp.WaitVisible(chromedp.CSS("#live.ok"))); err != nil {
		return err
	}

	// The fleet: each table computed at its own pace, session 13 failing.
	fleetCtx, stopFleet := context.WithTimeout(ctx, run)
	defer stopFleet()
	done := make(chan error, len(tables))
	for i, name := range tables {
		go func() {
			done <- compute(fleetCtx, jobs[name], streams[name], 4+6*i, time.Duration(120+200*i)*time.Millisecond)
		}()
	}
	for range tables {
		if err := <-done; err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	time.Sleep(time.Second) // a last reading with the fleet stopped

	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "web-console.png"), png, 0o644); err != nil {
		return err
	}
	tableURL := url + "/tables/" + tables[0] + "?status=pending&status=reserved&status=error&limit=15"
	if err := chromedp.Do(bctx, chromedp.Navigate(tableURL), chromedp.WaitVisible(chromedp.CSS("table.jobs"))); err != nil {
		return err
	}
	if png, err = chromedp.Run(bctx, chromedp.CaptureScreenshot()); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "web-console-jobs.png"), png, 0o644); err != nil {
		return err
	}
	jobURL := url + "/tables/" + tables[0] + "/job?key.subject_id=3&key.session_id=13"
	if err := chromedp.Do(bctx, chromedp.Navigate(jobURL), chromedp.WaitVisible(chromedp.CSS("#error-stack"))); err != nil {
		return err
	}
	if png, err = chromedp.Run(bctx, chromedp.CaptureScreenshot()); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "web-console-job.png"), png, 0o644); err != nil {
		return err
	}
	fmt.Println("wrote web-console.png, web-console-jobs.png and web-console-job.png into", out)
	return nil
}

// compute is a small fleet on one table: it publishes due jobs as a scheduler does, then
// reserves batches of them and records their outcomes as workers do, session 13 failing with
// a traceback, until ctx ends.
func compute(ctx context.Context, j *jobsdb.Jobs, stream *queue.Table, batch int, pause time.Duration) error {
	t := j.Target()
	for {
		due, err := j.FetchPending(ctx, 200, nil, nil)
		if err != nil || len(due) == 0 {
			return err
		}
		var msgs []queue.Message
		for _, d := range due[min(batch, len(due)):] {
			key, _ := t.KeyJSON(d.Key)
			msgs = append(msgs, queue.Message{Priority: d.Priority, Key: key})
		}
		if _, err := stream.Publish(ctx, msgs); err != nil {
			return err
		}
		keys := make([]jobsdb.Key, 0, batch)
		for _, d := range due[:min(batch, len(due))] {
			keys = append(keys, d.Key)
		}
		leases, err := j.Reserve(ctx, keys)
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause + time.Duration(rand.IntN(200))*time.Millisecond):
		}
		var outcomes []jobsdb.Outcome
		for _, l := range leases {
			m := t.KeyMap(l.Key)
			o := jobsdb.Outcome{Lease: l, Kind: jobsdb.OutcomeSuccess, Duration: pause}
			if fmt.Sprint(m["session_id"]) == "13" {
				o.Kind = jobsdb.OutcomeError
				o.Message = fmt.Sprintf("ValueError: subject %v, session 13: the recording is corrupt", m["subject_id"])
				o.Stack = "Traceback (most recent call last):\n  File \"/srv/pipeline/lab_pipeline.py\", line 41, in make\n" +
					"    spikes = sort_spikes(load_recording(key))\n  File \"/srv/pipeline/recording.py\", line 88, in load_recording\n" +
					"    raise ValueError(f\"subject {key['subject_id']}, session 13: the recording is corrupt\")\n" + o.Message + "\n"
			}
			outcomes = append(outcomes, o)
		}
		if _, err := j.Record(context.WithoutCancel(ctx), outcomes); err != nil {
			return err
		}
	}
}

// server returns a MySQL DSN: JETJOBS_MYSQL_DSN or the default when it answers, else a private
// server started from the mariadbd binary (stop removes it).
func server() (dsn string, stop func(), err error) {
	dsn = os.Getenv(config.EnvMySQLDSN)
	if dsn == "" {
		dsn = config.DefaultMySQLDSN
	}
	if _, err := mysql.ParseDSN(dsn); err != nil {
		return "", nil, err
	}
	if mysqlserver.Ping(dsn) == nil {
		return dsn, func() {}, nil
	}
	bin := mysqlserver.Binary()
	if bin == "" {
		return "", nil, fmt.Errorf("no MySQL at %s and no server binary: %s", dsn, mysqlserver.InstallHint)
	}
	dir, err := os.MkdirTemp("", "jetjobs-screenshot-mysql-")
	if err != nil {
		return "", nil, err
	}
	s, err := mysqlserver.Start(bin, dir)
	if err != nil {
		return "", nil, err
	}
	return s.DSN, func() { s.Stop(); os.RemoveAll(dir) }, nil
}

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}
