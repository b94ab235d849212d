package worker_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/jetjobs/jetjobs/internal/mysqltest"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/worker"
)

// A Go worker: the handler computes a job and returns the target row, which is inserted in
// the same transaction that records the job's completion. Run it as a program with
// worker.New(...).Run(ctx) next to a scheduler; here the example's setup plays the scheduler.
func Example() {
	env, cleanup := exampleSetup() // a database with subject → __square, jobs published
	defer cleanup()

	db, err := jobsdb.Open(context.Background(), env.dsn)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	nc, err := queue.Connect(context.Background(), queue.ConnectOptions{URL: env.natsURL})
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	square := func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		var n int
		fmt.Sscan(fmt.Sprint(job.Key["subject_id"]), &n)
		return worker.Result{Rows: []jobsdb.Row{{"square": n * n}}}, nil
	}
	w, err := worker.New(worker.Options{
		DB: db, NATS: nc,
		Tables:      []worker.Table{{Name: env.table}},
		Handler:     square,
		Concurrency: 4,
		Once:        true, // stop when no due job is left
		Logger:      quietLogger(),
	})
	if err != nil {
		log.Fatal(err)
	}
	summary, err := w.Run(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("success_count:", summary.SuccessCount)

	var total int
	db.QueryRow("SELECT SUM(square) FROM " + env.table).Scan(&total)
	fmt.Println("sum of squares:", total)
	// Output:
	// success_count: 5
	// sum of squares: 55
}

// exampleEnv is where the example's setup put things.
type exampleEnv struct{ dsn, natsURL, table string }

// exampleSetup creates the pipeline subject(1..5) → __square in a fresh database, refreshes
// its jobs and publishes them on an embedded NATS server, as a scheduler would.
func exampleSetup() (exampleEnv, func()) {
	ctx := context.Background()
	server, err := mysqltest.Server()
	must(err)
	admin, err := sql.Open("mysql", server)
	must(err)
	name := fmt.Sprintf("jj_example_%d", time.Now().UnixNano())
	_, err = admin.Exec("CREATE DATABASE " + name)
	must(err)
	dsn, err := mysqltest.WithDatabase(server, name)
	must(err)
	db, err := jobsdb.Open(ctx, dsn)
	must(err)
	for _, stmt := range []string{
		"CREATE TABLE subject (subject_id int NOT NULL PRIMARY KEY)",
		"CREATE TABLE __square (subject_id int NOT NULL PRIMARY KEY, square int NOT NULL, FOREIGN KEY (subject_id) REFERENCES subject (subject_id))",
		"INSERT INTO subject VALUES (1), (2), (3), (4), (5)",
	} {
		_, err := db.Exec(stmt)
		must(err)
	}
	store, err := os.MkdirTemp("", "jetjobs-example-")
	must(err)
	ns, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: store})
	must(err)

	env := exampleEnv{dsn: dsn, natsURL: ns.ClientURL(), table: name + ".__square"}
	target, err := jobsdb.Inspect(ctx, db, env.table, "")
	must(err)
	jobs := jobsdb.New(db, target, jobsdb.Options{})
	_, err = jobs.Refresh(ctx, jobsdb.RefreshOptions{Priority: 5, Delay: -time.Second})
	must(err)
	due, err := jobs.FetchPending(ctx, 0, nil, nil)
	must(err)
	nc, err := queue.Connect(ctx, queue.ConnectOptions{URL: env.natsURL})
	must(err)
	q, err := queue.Open(ctx, nc, name, "__square", queue.Config{})
	must(err)
	var msgs []queue.Message
	for _, j := range due {
		key, err := target.KeyJSON(j.Key)
		must(err)
		msgs = append(msgs, queue.Message{Priority: j.Priority, Key: key})
	}
	_, err = q.Publish(ctx, msgs)
	must(err)
	nc.Close()
	return env, func() {
		db.Close()
		admin.Exec("DROP DATABASE " + name)
		admin.Close()
		ns.Shutdown()
		os.RemoveAll(store)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
