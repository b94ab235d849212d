package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsReadyTimeout bounds the wait for a node to report itself healthy.
const natsReadyTimeout = 60 * time.Second

// natsNode is one nats-server process with its config, store and ports.
type natsNode struct {
	name        string // n1, n2, n3: its server_name
	dir         string
	conf        string
	store       string
	clientAddr  string
	clusterAddr string
	httpAddr    string
	p           *proc
}

// natsWorld is the run's NATS: one node, or a three-node JetStream cluster.
type natsWorld struct {
	bin   string
	nodes []*natsNode
	log   *runLog
}

func startNATS(ctx context.Context, dir, bin string, cluster bool, log *runLog) (*natsWorld, error) {
	w := &natsWorld{bin: bin, log: log}
	n := 1
	if cluster {
		n = 3
	}
	for i := range n {
		node := &natsNode{name: fmt.Sprintf("n%d", i+1), dir: filepath.Join(dir, fmt.Sprintf("nats-n%d", i+1))}
		node.store = filepath.Join(node.dir, "store")
		node.conf = filepath.Join(node.dir, "nats.conf")
		var err error
		for _, a := range []*string{&node.clientAddr, &node.clusterAddr, &node.httpAddr} {
			if *a, err = freeAddr(); err != nil {
				return nil, err
			}
		}
		if err := os.MkdirAll(node.store, 0o755); err != nil {
			return nil, err
		}
		w.nodes = append(w.nodes, node)
	}
	for _, node := range w.nodes {
		if err := os.WriteFile(node.conf, []byte(w.config(node)), 0o644); err != nil {
			return nil, err
		}
		if err := w.launch(node); err != nil {
			w.close()
			return nil, err
		}
	}
	for _, node := range w.nodes {
		if err := node.waitHealthy(ctx, natsReadyTimeout); err != nil {
			w.close()
			return nil, err
		}
	}
	return w, nil
}

// config is a node's configuration file: loopback only, a monitoring port, JetStream with a
// store of its own, and in a cluster the routes to the other nodes. no_advertise keeps the
// servers from telling clients the other nodes' addresses, so that workers stay behind their
// proxies.
func (w *natsWorld) config(node *natsNode) string {
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: %q\nhttp: %q\n", node.name, node.clientAddr, node.httpAddr)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  max_memory_store: 268435456\n  max_file_store: 4294967296\n}\n", node.store)
	if len(w.nodes) > 1 {
		var routes []string
		for _, other := range w.nodes {
			if other != node {
				routes = append(routes, fmt.Sprintf("%q", "nats-route://"+other.clusterAddr))
			}
		}
		fmt.Fprintf(&b, "cluster {\n  name: chaos\n  listen: %q\n  no_advertise: true\n  routes: [%s]\n}\n", node.clusterAddr, strings.Join(routes, ", "))
	}
	return b.String()
}

func (w *natsWorld) launch(node *natsNode) error {
	p, err := startProc("nats-"+node.name, filepath.Join(node.dir, "server.log"), nil, w.bin, "-c", node.conf)
	if err != nil {
		return err
	}
	node.p = p
	return nil
}

// waitHealthy polls the node's /healthz until it answers 200.
func (node *natsNode) waitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for {
		body, code, err := httpGet(ctx, "http://"+node.httpAddr+"/healthz")
		if err == nil && code == 200 {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d %s", code, strings.TrimSpace(body))
		}
		if node.p.exited() {
			return fmt.Errorf("nats %s exited (%s): %s", node.name, node.p.exitStatus(), node.p.logTail(10))
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 100*time.Millisecond) {
			return fmt.Errorf("nats %s not healthy within %v: %s", node.name, timeout, last)
		}
	}
}

// urls lists the nodes' client URLs, comma-separated.
func (w *natsWorld) urls() string {
	var urls []string
	for _, n := range w.nodes {
		urls = append(urls, "nats://"+n.clientAddr)
	}
	return strings.Join(urls, ",")
}

// restart stops a node with sig, optionally empties its store, waits down and starts it
// again on the same ports; it does not wait for the node to be healthy.
func (w *natsWorld) restart(ctx context.Context, node *natsNode, sig syscall.Signal, wipe bool, down time.Duration) error {
	node.p.stop(sig, stopTimeout)
	if wipe {
		if err := os.RemoveAll(node.store); err != nil {
			return err
		}
		if err := os.MkdirAll(node.store, 0o755); err != nil {
			return err
		}
	}
	sleepCtx(ctx, down)
	return w.launch(node)
}

// ensureRunning starts every node that is not running.
func (w *natsWorld) ensureRunning() error {
	for _, n := range w.nodes {
		if n.p.exited() {
			w.log.printf("nats %s was down (%s): starting it", n.name, n.p.exitStatus())
			if err := w.launch(n); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *natsWorld) close() {
	for _, n := range w.nodes {
		if n.p != nil && !n.p.exited() {
			n.p.stop(syscall.SIGKILL, stopTimeout)
		}
	}
}

// connect opens a direct connection to the cluster for the harness.
func (w *natsWorld) connect() (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(w.urls(), nats.Name("jetjobs-chaos"), nats.Timeout(3*time.Second))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// streamSubject is a subject in the table's stream, to find the stream by.
func streamSubject(prefix string) string {
	return prefix + "." + database + "." + targetTable + ".p5.x"
}

// deleteStream deletes the table's stream behind the programs' backs and returns its name.
func (w *natsWorld) deleteStream(ctx context.Context, prefix string) (string, error) {
	nc, js, err := w.connect()
	if err != nil {
		return "", err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	name, err := js.StreamNameBySubject(ctx, streamSubject(prefix))
	if err != nil {
		return "", fmt.Errorf("find the stream: %w", err)
	}
	if err := js.DeleteStream(ctx, name); err != nil {
		return "", fmt.Errorf("delete stream %s: %w", name, err)
	}
	return name, nil
}

// connections is the number of client connections of each node (its /connz).
func (w *natsWorld) connections(ctx context.Context) (int, error) {
	total := 0
	for _, n := range w.nodes {
		body, code, err := httpGet(ctx, "http://"+n.httpAddr+"/connz?limit=1")
		if err != nil || code != 200 {
			return 0, fmt.Errorf("nats %s /connz: %v (status %d)", n.name, err, code)
		}
		var connz struct {
			Total int `json:"total"` // all open connections; num_connections counts only this page
		}
		if err := json.Unmarshal([]byte(body), &connz); err != nil {
			return 0, err
		}
		total += connz.Total
	}
	return total, nil
}
