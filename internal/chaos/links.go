package chaos

import (
	"fmt"
	"strings"

	"github.com/jetjobs/jetjobs/internal/faultproxy"
)

// workerLinks are one worker slot's network: a fault proxy to MySQL and one to each NATS node.
// A slot keeps its links across the processes that fill it, so a network fault can cut one
// worker off (as when one machine loses its network) or all of them.
type workerLinks struct {
	mysql *faultproxy.Proxy
	nats  []*faultproxy.Proxy
}

func newWorkerLinks(m *mysqlWorld, n *natsWorld) (*workerLinks, error) {
	l := &workerLinks{}
	var err error
	if l.mysql, err = faultproxy.New(m.addr); err != nil {
		return nil, err
	}
	for _, node := range n.nodes {
		p, err := faultproxy.New(node.clientAddr)
		if err != nil {
			l.close()
			return nil, err
		}
		l.nats = append(l.nats, p)
	}
	return l, nil
}

// mysqlDSN is the worker's DSN, through its proxy.
func (l *workerLinks) mysqlDSN() string { return workerUser + "@tcp(" + l.mysql.Addr() + ")/" }

// natsURLs are the worker's NATS URLs, through its proxies.
func (l *workerLinks) natsURLs() string {
	var urls []string
	for _, p := range l.nats {
		urls = append(urls, "nats://"+p.Addr())
	}
	return strings.Join(urls, ",")
}

func (l *workerLinks) String() string {
	return fmt.Sprintf("MySQL via %s, NATS via %s", l.mysql.Addr(), l.natsURLs())
}

func (l *workerLinks) close() {
	if l.mysql != nil {
		l.mysql.Close()
	}
	for _, p := range l.nats {
		p.Close()
	}
}
