package workercmd

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/worker"
)

// progressBar shows the jobs finished (succeeded or failed) out of those due or running
// when the worker started; it is also the log writer, so log lines appear above the bar.
type progressBar struct {
	mu  sync.Mutex
	bar *progressbar.ProgressBar
	out io.Writer
}

func newProgressBar(ctx context.Context, db *sql.DB, cfg config.Config, tables []string, w io.Writer) *progressBar {
	total := int64(-1) // unknown: a spinner
	for _, name := range tables {
		jobs, err := cli.OpenJobs(ctx, db, cfg, name, jobsdb.Identity{})
		if err != nil {
			total = -1
			break
		}
		p, err := jobs.Progress(ctx)
		if err != nil {
			total = -1
			break
		}
		total = max(total, 0) + p.Pending + p.Reserved
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("jobs"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("jobs"),
		progressbar.OptionThrottle(100*time.Millisecond),
	)
	return &progressBar{bar: bar, out: w}
}

// count advances the bar for jobs that finished; retried and released jobs come back.
func (p *progressBar) count(e worker.Event) {
	if e.Recorded && (e.Outcome == jobsdb.OutcomeSuccess || e.Outcome == jobsdb.OutcomeError) {
		p.mu.Lock()
		p.bar.Add(1)
		p.mu.Unlock()
	}
}

func (p *progressBar) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar.Clear()
	n, err := p.out.Write(b)
	p.bar.RenderBlank()
	return n, err
}

// close draws the final state and ends the bar's line, so the summary starts on its own.
func (p *progressBar) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar.RenderBlank()
	p.bar.Exit()
	fmt.Fprintln(p.out)
}
