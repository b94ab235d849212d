package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// DialTimeout bounds the proxy's connection to the target for one accepted client; a client
// whose server cannot be reached in time is reset.
const DialTimeout = 5 * time.Second

// chunkSize is the largest piece copied (and delayed) at once.
const chunkSize = 32 << 10

// ErrClosed is returned by operations on a closed proxy.
var ErrClosed = errors.New("faultproxy: proxy closed")

// Direction names one way of a connection.
type Direction int

const (
	// ToServer is the client-to-server direction.
	ToServer Direction = iota
	// ToClient is the server-to-client direction.
	ToClient
)

func (d Direction) String() string {
	if d == ToServer {
		return "client→server"
	}
	return "server→client"
}

// Proxy forwards TCP connections from its loopback listener to a target, with faults.
//
// Lock order: Proxy.mu, then nothing (links are closed while holding it; closing a net.Conn
// takes no lock of ours).
type Proxy struct {
	target string
	ln     net.Listener

	mu          sync.Mutex
	changed     chan struct{} // closed and replaced whenever the fault state changes
	partitioned bool
	refusing    bool
	latency     [2]time.Duration // by Direction
	links       map[*link]struct{}
	closed      bool

	wg sync.WaitGroup
}

// link is one proxied connection.
type link struct {
	client net.Conn
	server net.Conn // nil until dialed
	done   chan struct{}
	once   sync.Once
}

// close ends the link; rst sends an RST instead of a FIN to both sides.
func (l *link) close(rst bool) {
	l.once.Do(func() {
		for _, c := range []net.Conn{l.client, l.server} {
			if c == nil {
				continue
			}
			if tc, ok := c.(*net.TCPConn); ok && rst {
				tc.SetLinger(0)
			}
			c.Close()
		}
		close(l.done)
	})
}

// New starts a proxy on a free port of 127.0.0.1 that forwards to target (host:port).
func New(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("faultproxy: target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{target: target, ln: ln, changed: make(chan struct{}), links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address, host:port, for clients.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// SetLatency delays every chunk by toServer on its way to the server and by toClient on its
// way back, from now on (a chunk already waiting keeps its delay).
func (p *Proxy) SetLatency(toServer, toClient time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = [2]time.Duration{toServer, toClient}
	p.changedLocked()
}

// Partition stops forwarding in both directions, on current and new connections, until Heal.
func (p *Proxy) Partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partitioned = true
	p.changedLocked()
}

// Refuse resets every new connection as soon as it is accepted, until Heal.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refusing = true
	p.changedLocked()
}

// Heal returns to pass-through: no partition, no refusal, no latency. Data held by a partition
// flows again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partitioned, p.refusing = false, false
	p.latency = [2]time.Duration{}
	p.changedLocked()
}

// Reset closes every current connection with an RST on both sides and returns how many there
// were. New connections are accepted as before.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.links)
	for l := range p.links {
		l.close(true)
	}
	return n
}

// Conns is the number of open proxied connections.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// UpstreamAddrs lists the local addresses (host:port) of the proxy's open connections to the
// target: how the server sees this proxy's clients (MySQL's PROCESSLIST.HOST, NATS's connz).
func (p *Proxy) UpstreamAddrs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var addrs []string
	for l := range p.links {
		if l.server != nil {
			addrs = append(addrs, l.server.LocalAddr().String())
		}
	}
	return addrs
}

// Close stops accepting, closes every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.closed = true
	for l := range p.links {
		l.close(false)
	}
	p.changedLocked()
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) changedLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		if p.closed || p.refusing {
			p.mu.Unlock()
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			continue
		}
		l := &link{client: c, done: make(chan struct{})}
		p.links[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(l)
	}
}

// serve dials the target for a link (once no partition stands in the way) and copies both ways.
func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer func() {
		l.close(false)
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	if !p.pass(l) {
		return
	}
	s, err := net.DialTimeout("tcp", p.target, DialTimeout)
	if err != nil {
		l.close(true)
		return
	}
	p.mu.Lock()
	select {
	case <-l.done: // reset or closed while dialing
		p.mu.Unlock()
		s.Close()
		return
	default:
	}
	l.server = s
	p.mu.Unlock()

	var copies sync.WaitGroup
	copies.Add(2)
	go func() { defer copies.Done(); p.copy(l, l.client, s, ToServer) }()
	go func() { defer copies.Done(); p.copy(l, s, l.client, ToClient) }()
	copies.Wait()
}

// copy forwards chunks from src to dst, holding them through partitions and delaying them by
// the direction's latency. At the end of src it half-closes dst; on an error it ends the link.
func (p *Proxy) copy(l *link, src, dst net.Conn, dir Direction) {
	buf := make([]byte, chunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.pass(l) || !p.delay(l, dir) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				l.close(true)
				return
			}
		}
		if err != nil {
			if tc, ok := dst.(*net.TCPConn); ok && isEOF(err) {
				tc.CloseWrite()
				return
			}
			l.close(true)
			return
		}
	}
}

// pass waits while the proxy is partitioned; false when the link ended meanwhile.
func (p *Proxy) pass(l *link) bool {
	for {
		p.mu.Lock()
		partitioned, changed := p.partitioned && !p.closed, p.changed
		p.mu.Unlock()
		if !partitioned {
			select {
			case <-l.done:
				return false
			default:
				return true
			}
		}
		select {
		case <-changed:
		case <-l.done:
			return false
		}
	}
}

// delay waits for the direction's latency; false when the link ended meanwhile.
func (p *Proxy) delay(l *link, dir Direction) bool {
	p.mu.Lock()
	d := p.latency[dir]
	p.mu.Unlock()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		return false
	}
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }
