package faultproxy_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/faultproxy"
)

// waitTimeout bounds every wait; the waits poll, they never sleep for a fixed time.
const waitTimeout = 10 * time.Second

// hangWindow is how long a read must stay unanswered to count as a hang.
const hangWindow = 300 * time.Millisecond

// echoServer accepts connections and echoes every line back until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newProxy(t *testing.T) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, p *faultproxy.Proxy) *client {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, conn: c, r: bufio.NewReader(c)}
}

// roundTrip sends a line and returns the echo, or the read error within timeout.
func (c *client) roundTrip(line string, timeout time.Duration) (string, error) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	return c.read(timeout)
}

func (c *client) read(timeout time.Duration) (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	s, err := c.r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

func mustEcho(t *testing.T, c *client, line string) {
	t.Helper()
	got, err := c.roundTrip(line, waitTimeout)
	if err != nil || got != line {
		t.Fatalf("echo of %q: got %q, %v", line, got, err)
	}
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// closedAtOnce checks that a new connection to p is closed without an answer: either its
// connect already sees the reset (on loopback the RST can beat connect's return) or its first
// read does.
func closedAtOnce(t *testing.T, p *faultproxy.Proxy) error {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		return nil
	}
	defer c.Close()
	cl := &client{t: t, conn: c, r: bufio.NewReader(c)}
	if _, err := cl.roundTrip("x", waitTimeout); err == nil || isTimeout(err) {
		return fmt.Errorf("read: %v, want the connection closed", err)
	}
	return nil
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func TestProxy(t *testing.T) {
	t.Parallel()

	t.Run("pass-through forwards both ways and listens on loopback", func(t *testing.T) {
		t.Parallel()
		p := newProxy(t)
		if !strings.HasPrefix(p.Addr(), "127.0.0.1:") {
			t.Errorf("proxy listens on %s, want 127.0.0.1", p.Addr())
		}
		c := dial(t, p)
		mustEcho(t, c, "hello")
		big := strings.Repeat("x", 200_000)
		mustEcho(t, c, big)
		if n := p.Conns(); n != 1 {
			t.Errorf("Conns = %d, want 1", n)
		}
		if addrs := p.UpstreamAddrs(); len(addrs) != 1 || !strings.HasPrefix(addrs[0], "127.0.0.1:") {
			t.Errorf("UpstreamAddrs = %v, want one loopback address", addrs)
		}
	})

	t.Run("latency delays each direction", func(t *testing.T) {
		t.Parallel()
		p := newProxy(t)
		c := dial(t, p)
		mustEcho(t, c, "warm")
		const up, down = 150 * time.Millisecond, 100 * time.Millisecond
		p.SetLatency(up, down)
		start := time.Now()
		mustEcho(t, c, "slow")
		if took := time.Since(start); took < up+down {
			t.Errorf("round trip took %v with latency %v + %v", took, up, down)
		}
		p.Heal()
		start = time.Now()
		mustEcho(t, c, "fast")
		if took := time.Since(start); took >= up+down {
			t.Errorf("round trip took %v after Heal", took)
		}
	})

	t.Run("a partition hangs current and new connections until healed, then delivers", func(t *testing.T) {
		t.Parallel()
		p := newProxy(t)
		c := dial(t, p)
		mustEcho(t, c, "before")
		p.Partition()
		if got, err := c.roundTrip("held", hangWindow); !isTimeout(err) {
			t.Fatalf("read across a partition: got %q, %v; want a timeout (a hang)", got, err)
		}
		fresh := dial(t, p) // the connect itself succeeds: the proxy accepts
		if got, err := fresh.roundTrip("new", hangWindow); !isTimeout(err) {
			t.Fatalf("new connection across a partition: got %q, %v; want a timeout", got, err)
		}
		p.Heal()
		if got, err := c.read(waitTimeout); err != nil || got != "held" {
			t.Fatalf("after Heal: got %q, %v; want the held line", got, err)
		}
		if got, err := fresh.read(waitTimeout); err != nil || got != "new" {
			t.Fatalf("new connection after Heal: got %q, %v", got, err)
		}
		mustEcho(t, c, "after")
	})

	t.Run("reset closes every current connection and accepts new ones", func(t *testing.T) {
		t.Parallel()
		p := newProxy(t)
		a, b := dial(t, p), dial(t, p)
		mustEcho(t, a, "a")
		mustEcho(t, b, "b")
		if n := p.Reset(); n != 2 {
			t.Errorf("Reset closed %d connections, want 2", n)
		}
		for _, c := range []*client{a, b} {
			if _, err := c.read(waitTimeout); err == nil || isTimeout(err) {
				t.Errorf("read after Reset: %v, want the connection closed", err)
			}
		}
		waitFor(t, "the reset connections to be gone", func() bool { return p.Conns() == 0 })
		mustEcho(t, dial(t, p), "again")
	})

	t.Run("refuse closes new connections at once and leaves current ones", func(t *testing.T) {
		t.Parallel()
		p := newProxy(t)
		old := dial(t, p)
		mustEcho(t, old, "old")
		p.Refuse()
		if err := closedAtOnce(t, p); err != nil {
			t.Errorf("a new connection while refusing: %v", err)
		}
		mustEcho(t, old, "still")
		p.Heal()
		mustEcho(t, dial(t, p), "accepted")
	})

	t.Run("a connection to an unreachable target is closed", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p, err := faultproxy.New(ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ln.Close() // after New, so that the proxy cannot get the target's port
		if err := closedAtOnce(t, p); err != nil {
			t.Error(err)
		}
	})

	t.Run("close ends every connection, even partitioned ones", func(t *testing.T) {
		t.Parallel()
		p, err := faultproxy.New(echoServer(t))
		if err != nil {
			t.Fatal(err)
		}
		c := dial(t, p)
		mustEcho(t, c, "x")
		p.Partition()
		c.conn.Write([]byte("held\n"))
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.read(waitTimeout); err == nil || isTimeout(err) {
			t.Errorf("read after Close: %v, want the connection closed", err)
		}
		if _, err := net.Dial("tcp", p.Addr()); err == nil {
			t.Error("the proxy still accepts after Close")
		}
		if err := p.Close(); !errors.Is(err, faultproxy.ErrClosed) {
			t.Errorf("second Close: %v, want ErrClosed", err)
		}
	})
}
