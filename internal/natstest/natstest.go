// Package natstest gives tests real NATS servers with JetStream: an embedded nats-server (the
// current version, in process) and the external server of the machine (nats-server 2.9.10 on
// Debian), so that behaviour is checked against the oldest and the newest server jetjobs
// supports.
//
// The external server is JETJOBS_TEST_NATS_URL, default nats://127.0.0.1:4222. When none
// answers there, tests that ask for it fail with a message saying how to provide one; they
// never skip.
//
// Tests on a shared server must not collide: give every test its own names (Name) and delete
// what it created (queue.Table.Delete) in t.Cleanup, so tests run in parallel and leftovers of
// a crashed run do not matter.
package natstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

// EnvURL names the external server to test against.
const EnvURL = "JETJOBS_TEST_NATS_URL"

// DefaultURL is used when EnvURL is unset.
const DefaultURL = "nats://127.0.0.1:4222"

const probeTimeout = 3 * time.Second

// Embedded starts an embedded server on a free loopback port with t.TempDir() as its store,
// and shuts it down when the test ends.
func Embedded(t testing.TB) *queue.Embedded {
	t.Helper()
	e, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("natstest: start embedded NATS: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

var (
	externalOnce sync.Once
	externalURL  string
	externalErr  string
)

// External returns the URL of the external server, failing the test when none answers there
// or it has no JetStream.
func External(t testing.TB) string {
	t.Helper()
	externalOnce.Do(func() { externalURL, externalErr = probeExternal() })
	if externalErr != "" {
		t.Fatal(externalErr)
	}
	return externalURL
}

func probeExternal() (string, string) {
	url := os.Getenv(EnvURL)
	if url == "" {
		url = DefaultURL
	}
	nc, err := nats.Connect(url, nats.Timeout(probeTimeout), nats.Name("jetjobs-natstest-probe"))
	if err != nil {
		return "", "natstest: no NATS server answers at " + url + " (" + err.Error() + "). These tests need one " +
			"with JetStream: run `nats-server -js` (Debian: apt-get install nats-server; it listens on " + DefaultURL +
			"), or set " + EnvURL + " to a server's URL."
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, "$JS.API.INFO", nil)
	if err != nil || len(msg.Data) == 0 {
		return "", "natstest: the NATS server at " + url + " (version " + nc.ConnectedServerVersion() +
			") does not answer JetStream requests; restart it with JetStream enabled (nats-server -js)."
	}
	return url, ""
}

// Server is one server to run a test against.
type Server struct {
	Name string // "embedded" or "external-<version>", for t.Run
	URL  string
}

// Servers returns the embedded server (started for this test) and the external one, so tests
// run against both with t.Run(s.Name, …). It fails the test when the external server is
// missing.
func Servers(t testing.TB) []Server {
	t.Helper()
	ext := External(t)
	nc := Conn(t, ext)
	version := nc.ConnectedServerVersion()
	nc.Close()
	return []Server{
		{Name: "embedded", URL: Embedded(t).ClientURL()},
		{Name: "external-" + version, URL: ext},
	}
}

// Conn connects to url and closes the connection when the test ends.
func Conn(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(probeTimeout), nats.Name("jetjobs-test"))
	if err != nil {
		t.Fatalf("natstest: connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Name returns base with a random suffix, unique across tests and runs: use it for the
// prefix, schema or table of a test's stream.
func Name(base string) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base + "_" + hex.EncodeToString(b[:])
}

// OpenTable opens a queue table with a unique prefix, schema and table on nc (cfg.Prefix is
// replaced), and deletes its stream when the test ends.
func OpenTable(t testing.TB, nc *nats.Conn, cfg queue.Config) *queue.Table {
	t.Helper()
	cfg.Prefix = Name("jjtest")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tbl, err := queue.Open(ctx, nc, Name("schema"), Name("__table"), cfg)
	if err != nil {
		t.Fatalf("natstest: open queue table: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tbl.Delete(ctx); err != nil {
			t.Errorf("natstest: delete stream %s: %v", tbl.StreamName(), err)
		}
	})
	return tbl
}

// DebianServer is the nats-server binary of Debian's package (2.9), which StartProcess runs.
const DebianServer = "/usr/sbin/nats-server"

// Process is a nats-server process the test owns, so that it can kill and restart it: on a
// free loopback port, with JetStream and a store directory of its own.
type Process struct {
	URL      string
	StoreDir string
	bin      string
	port     int
	t        testing.TB
	cmd      *exec.Cmd
}

// StartProcess starts the nats-server binary bin with JetStream on a free loopback port and
// a store in a new temporary directory; it is killed when the test ends. It fails the test
// when bin is missing, saying how to install it.
func StartProcess(t testing.TB, bin string) *Process {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("natstest: %v; install the server (Debian: apt-get install nats-server)", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	p := &Process{bin: bin, port: port, StoreDir: t.TempDir(), t: t, URL: fmt.Sprintf("nats://127.0.0.1:%d", port)}
	p.Start()
	t.Cleanup(p.Kill)
	return p
}

// Start starts the server (again) on its port and store and waits until it accepts
// connections with JetStream.
func (p *Process) Start() {
	p.t.Helper()
	cmd := exec.Command(p.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(p.port), "-js", "-sd", p.StoreDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("natstest: start %s: %v", p.bin, err)
	}
	p.cmd = cmd
	deadline := time.Now().Add(startTimeout)
	for {
		nc, err := nats.Connect(p.URL, nats.Timeout(probeTimeout))
		if err == nil {
			_, err = nc.Request("$JS.API.INFO", nil, probeTimeout)
			nc.Close()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("natstest: %s on port %d did not start within %v: %v", p.bin, p.port, startTimeout, err)
		}
		time.Sleep(startPoll)
	}
}

// Kill kills the server with SIGKILL, as a crash would, and waits for it; its store stays.
func (p *Process) Kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p.cmd = nil
}

// Pacing of Process.Start.
const (
	startTimeout = 20 * time.Second
	startPoll    = 20 * time.Millisecond
)

// PublishDue publishes every due pending job of jobs to its stream, as the scheduler does.
func PublishDue(t testing.TB, jobs *jobsdb.Jobs, q *queue.Table) {
	t.Helper()
	ctx := context.Background()
	due, err := jobs.FetchPending(ctx, 1000000, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]queue.Message, len(due))
	for i, j := range due {
		key, err := jobs.Target().KeyJSON(j.Key)
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = queue.Message{Priority: j.Priority, Key: key}
	}
	if _, err := q.Publish(ctx, msgs); err != nil {
		t.Fatal(err)
	}
}

// Restartable is an embedded server the test stops and starts again, on the same port and
// store, to take NATS away from the programs under test and give it back.
type Restartable struct {
	URL   string
	t     testing.TB
	addr  string
	store string
	mu    sync.Mutex
	srv   *queue.Embedded
}

// StartRestartable starts an embedded server on a free loopback port with t.TempDir() as its
// store; it is shut down when the test ends.
func StartRestartable(t testing.TB) *Restartable {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Restartable{t: t, addr: ln.Addr().String(), store: t.TempDir()}
	r.URL = "nats://" + r.addr
	ln.Close()
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start starts the server (again).
func (r *Restartable) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		return
	}
	srv, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: r.addr, StoreDir: r.store})
	if err != nil {
		r.t.Fatalf("natstest: restart embedded NATS on %s: %v", r.addr, err)
	}
	r.srv = srv
}

// Stop shuts the server down; its store stays for the next Start.
func (r *Restartable) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		r.srv.Shutdown()
		r.srv = nil
	}
}
