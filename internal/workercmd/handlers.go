package workercmd

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/worker"
)

// dataJointAdapter is the command line of the Python package's DataJoint adapter, followed by
// the classes it computes.
const dataJointAdapter = "python3 -m jetjobs.datajoint"

// handlerPlan says which handler computes which table: the DataJoint adapter the tables with a
// DataJoint class (--datajoint, or their "datajoint" entry), --exec the others.
type handlerPlan struct {
	classes    []string        // DataJoint classes, for the adapter's command line
	dataJoint  map[string]bool // tables computed by the adapter
	execTables []string        // tables computed by --exec
	goHandler  worker.Handler  // MainWith's handler, for every table
}

// planHandlers checks the handler flags against the tables served.
func planHandlers(cfg config.Config, tables []string, o options) (handlerPlan, error) {
	plan := handlerPlan{dataJoint: map[string]bool{}, goHandler: o.handler}
	if o.handler != nil {
		return plan, nil
	}
	classes := map[string]bool{}
	for _, class := range o.dataJoint {
		if err := config.CheckDataJointClass(class); err != nil {
			return plan, cli.Usagef("--datajoint: %v", err)
		}
		classes[class] = true
	}
	if len(o.dataJoint) > 0 && o.exec != "" {
		return plan, cli.Usagef("--datajoint and --exec exclude each other: --datajoint computes every table given with DataJoint's make(); " +
			"to mix them, give the DataJoint tables a \"datajoint\" entry in the config file")
	}
	for _, name := range tables {
		entry, _ := cfg.Table(name)
		switch {
		case len(o.dataJoint) > 0 || entry.DataJoint != "":
			plan.dataJoint[name] = true
			if entry.DataJoint != "" {
				classes[entry.DataJoint] = true
			}
		default:
			plan.execTables = append(plan.execTables, name)
		}
	}
	if len(plan.execTables) > 0 && o.exec == "" {
		return plan, cli.Usagef("--exec is required: the command that computes one job of %s (or --datajoint module.Class, "+
			"or a \"datajoint\" entry for the table in the config file)", strings.Join(plan.execTables, ", "))
	}
	if o.persistent && o.exec == "" {
		return plan, cli.Usagef("--persistent keeps the --exec handler running: give --exec")
	}
	for class := range classes {
		plan.classes = append(plan.classes, class)
	}
	sort.Strings(plan.classes)
	return plan, nil
}

// persistentHandler is a persistent handler the worker uses, with its command line.
type persistentHandler struct {
	*worker.PersistentHandler
	command string
}

// build returns the worker's handler and the persistent handlers it uses, to start and stop.
func (p handlerPlan) build(o options, log *slog.Logger) (worker.Handler, []persistentHandler) {
	if p.goHandler != nil {
		return p.goHandler, nil
	}
	var persistent []persistentHandler
	keep := func(command string) worker.Handler {
		h := worker.Persistent(worker.PersistentOptions{Command: command, Timeout: o.timeout, StartTimeout: o.startTimeout, Logger: log})
		persistent = append(persistent, persistentHandler{h, command})
		return h.Handle
	}
	var execHandler, djHandler worker.Handler
	switch {
	case len(p.execTables) == 0:
	case o.persistent:
		execHandler = keep(o.exec)
	default:
		execHandler = worker.Exec(worker.ExecOptions{Command: o.exec, Timeout: o.timeout})
	}
	if len(p.dataJoint) > 0 {
		djHandler = keep(dataJointAdapter + " " + strings.Join(p.classes, " "))
	}
	switch {
	case djHandler == nil:
		return execHandler, persistent
	case execHandler == nil:
		return djHandler, persistent
	}
	return func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		if p.dataJoint[job.Table] {
			return djHandler(ctx, job)
		}
		return execHandler(ctx, job)
	}, persistent
}

// start starts n programs of each handler, before the worker takes any job: a handler that
// cannot start is reported at once, and the first jobs do not wait for the programs.
func start(ctx context.Context, handlers []persistentHandler, n int) error {
	for _, h := range handlers {
		if err := h.Start(ctx, n); err != nil {
			return fmt.Errorf("%s: %w", h.command, err)
		}
	}
	return nil
}

func stopAll(handlers []persistentHandler) {
	for _, h := range handlers {
		h.Stop()
	}
}
