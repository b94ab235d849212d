package workercmd

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
)

func TestHandlerFlagsAreChecked(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"--persistent without --exec":     {[]string{"--persistent", "--datajoint", "lab.A", "a.b"}, "--persistent keeps the --exec handler running"},
		"a class without its module":      {[]string{"--datajoint", "Analysis", "a.b"}, `--datajoint: "Analysis" is not a DataJoint class as module.Class`},
		"--datajoint and --exec":          {[]string{"--datajoint", "lab.A", "--exec", "h.sh", "a.b"}, "--datajoint and --exec exclude each other"},
		"no handler for a table":          {[]string{"a.b"}, "--exec is required: the command that computes one job of a.b"},
		"a class with shell syntax in it": {[]string{"--datajoint", "lab.A;reboot", "a.b"}, "is not a DataJoint class"},
	} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := Main(append(tc.args, "--mysql", "root@tcp(127.0.0.1:1)/"), &stdout, &stderr); code != cli.ExitUsage || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), cli.ExitUsage, tc.want)
			}
		})
	}
}

func TestHandlerPlanRoutesTablesToTheirHandler(t *testing.T) {
	cfg := config.Default()
	cfg.Tables = []config.Table{
		{Table: "lab.__analysis", DataJoint: "lab_pipeline.Analysis"},
		{Table: "lab.__spikes", DataJoint: "lab_pipeline.Spikes"},
		{Table: "lab.__plots"},
	}
	tables := []string{"lab.__analysis", "lab.__spikes", "lab.__plots"}

	t.Run("tables with a datajoint entry go to the adapter, the others to --exec", func(t *testing.T) {
		plan, err := planHandlers(cfg, tables, options{exec: "plot.sh"})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(plan.classes, []string{"lab_pipeline.Analysis", "lab_pipeline.Spikes"}) ||
			!plan.dataJoint["lab.__analysis"] || !plan.dataJoint["lab.__spikes"] || !slices.Equal(plan.execTables, []string{"lab.__plots"}) {
			t.Fatalf("plan %+v", plan)
		}
		_, persistent := plan.build(options{exec: "plot.sh"}, nil)
		if len(persistent) != 1 || persistent[0].command != "python3 -m jetjobs.datajoint lab_pipeline.Analysis lab_pipeline.Spikes" {
			t.Fatalf("persistent handlers %+v: want the adapter alone (--exec runs once per job)", persistent)
		}
	})
	t.Run("--datajoint computes every table given", func(t *testing.T) {
		plan, err := planHandlers(cfg, []string{"lab.__plots"}, options{dataJoint: []string{"lab_pipeline.Plots"}})
		if err != nil || !plan.dataJoint["lab.__plots"] || !slices.Equal(plan.classes, []string{"lab_pipeline.Plots"}) {
			t.Fatalf("plan %+v, %v", plan, err)
		}
	})
	t.Run("--exec with --persistent is kept running", func(t *testing.T) {
		plan, err := planHandlers(cfg, []string{"lab.__plots"}, options{exec: "plot.py", persistent: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, persistent := plan.build(options{exec: "plot.py", persistent: true}, nil); len(persistent) != 1 || persistent[0].command != "plot.py" {
			t.Fatalf("persistent handlers %+v", persistent)
		}
	})
}
