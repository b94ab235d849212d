package demo_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/demo"
)

// No Docker engine runs where the tests run: these tests load docker-compose.yml with the
// Compose specification's own loader (schema validation, interpolation, profiles, consistency
// of depends_on) and check what `docker compose up` relies on.

const root = "../.."

func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithProfiles(profiles), cli.WithDiscardEnvFile)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml with profiles %v: %v", profiles, err)
	}
	return p
}

func TestCompose(t *testing.T) {
	base := []string{"mysql", "nats", "pipeline", "scheduler", "worker"}
	cluster := []string{"nats-1", "nats-2", "nats-3", "pipeline-cluster", "scheduler-cluster", "worker-cluster"}
	all := append(slices.Clone(base), cluster...)
	slices.Sort(all)

	t.Run("loads and validates with every profile", func(t *testing.T) {
		for _, tc := range []struct {
			profiles []string
			want     []string
		}{
			{nil, base},
			{[]string{"cluster"}, all},
			{[]string{"*"}, all},
		} {
			p := loadCompose(t, tc.profiles...)
			got := p.ServiceNames()
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("profiles %v: services %v, want %v", tc.profiles, got, want)
			}
		}
	})

	p := loadCompose(t, "*")
	svc := func(name string) types.ServiceConfig {
		t.Helper()
		s, err := p.GetService(name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	t.Run("images: MySQL 8.4, NATS 2.x with JetStream, jetjobs built from the Dockerfile", func(t *testing.T) {
		for _, name := range []string{"mysql", "pipeline", "pipeline-cluster"} {
			if img := svc(name).Image; img != "mysql:8.4" {
				t.Errorf("%s: image %q, want mysql:8.4", name, img)
			}
		}
		for _, name := range []string{"nats", "nats-1", "nats-2", "nats-3"} {
			s := svc(name)
			if !strings.HasPrefix(s.Image, "nats:2.") {
				t.Errorf("%s: image %q, want nats:2.x", name, s.Image)
			}
			if !slices.Contains(s.Command, "--jetstream") {
				t.Errorf("%s: JetStream is off: command %q", name, s.Command)
			}
		}
		for _, name := range []string{"scheduler", "worker", "scheduler-cluster", "worker-cluster"} {
			s := svc(name)
			if s.Build == nil || s.Build.Dockerfile != "Dockerfile" {
				t.Errorf("%s: not built from the Dockerfile: %+v", name, s.Build)
			}
		}
	})

	t.Run("the cluster profile is a three-node NATS cluster with streams replicated three times", func(t *testing.T) {
		names := map[string]bool{}
		for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
			s := svc(name)
			if !slices.Equal(s.Profiles, []string{"cluster"}) {
				t.Errorf("%s: profiles %v, want [cluster]", name, s.Profiles)
			}
			names[flagValue(s.Command, "--server_name")] = true
			if flagValue(s.Command, "--cluster_name") != "jetjobs" {
				t.Errorf("%s: no cluster name: %q", name, s.Command)
			}
			routes := flagValue(s.Command, "--routes")
			for _, peer := range []string{"nats-1", "nats-2", "nats-3"} {
				if !strings.Contains(routes, "nats://"+peer+":6222") {
					t.Errorf("%s: routes %q miss %s", name, routes, peer)
				}
			}
		}
		if len(names) != 3 {
			t.Errorf("the nodes' server names are not distinct: %v", names)
		}
		for _, tc := range []struct {
			service  string
			replicas int
			urls     int
		}{{"scheduler", 1, 1}, {"worker", 1, 1}, {"scheduler-cluster", 3, 3}, {"worker-cluster", 3, 3}} {
			s := svc(tc.service)
			cfg := serviceConfig(t, s)
			if cfg.NATS.Replicas != tc.replicas {
				t.Errorf("%s: nats.replicas %d, want %d", tc.service, cfg.NATS.Replicas, tc.replicas)
			}
			if n := len(strings.Split(env(s, config.EnvNATSURL), ",")); n != tc.urls {
				t.Errorf("%s: %s has %d servers, want %d", tc.service, config.EnvNATSURL, n, tc.urls)
			}
		}
	})

	t.Run("workers scale: no container name, no host port", func(t *testing.T) {
		for _, name := range []string{"worker", "worker-cluster"} {
			s := svc(name)
			if s.ContainerName != "" {
				t.Errorf("%s: container_name %q stops --scale", name, s.ContainerName)
			}
			for _, port := range s.Ports {
				if port.Published != "" {
					t.Errorf("%s: host port %s stops --scale", name, port.Published)
				}
			}
		}
		for _, s := range p.Services {
			for _, port := range s.Ports {
				if port.Published != "" {
					t.Errorf("%s publishes host port %s; the file publishes none, so it never clashes with a local MySQL or NATS", s.Name, port.Published)
				}
			}
		}
	})

	t.Run("healthchecks", func(t *testing.T) {
		for _, name := range []string{"mysql", "nats", "nats-1", "nats-2", "nats-3", "scheduler", "scheduler-cluster", "worker", "worker-cluster"} {
			hc := svc(name).HealthCheck
			if hc == nil || hc.Disable || len(hc.Test) < 2 {
				t.Errorf("%s: no healthcheck: %+v", name, hc)
			}
		}
		for name, path := range map[string]string{
			"scheduler": "/readyz", "scheduler-cluster": "/readyz", "worker": "/healthz", "worker-cluster": "/healthz",
		} {
			s := svc(name)
			addr := flagValue(s.Command, "--metrics-addr")
			_, port, _ := strings.Cut(addr, ":")
			if test := strings.Join(s.HealthCheck.Test, " "); port == "" || !strings.Contains(test, "127.0.0.1:"+port+path) {
				t.Errorf("%s: healthcheck %q does not ask %s on --metrics-addr %q", name, test, path, addr)
			}
		}
	})

	t.Run("dependencies", func(t *testing.T) {
		const healthy, completed = types.ServiceConditionHealthy, types.ServiceConditionCompletedSuccessfully
		want := map[string]map[string]string{
			"pipeline":          {"mysql": healthy},
			"pipeline-cluster":  {"mysql": healthy},
			"scheduler":         {"mysql": healthy, "nats": healthy, "pipeline": completed},
			"worker":            {"pipeline": completed, "nats": healthy, "scheduler": healthy},
			"scheduler-cluster": {"mysql": healthy, "nats-1": healthy, "nats-2": healthy, "nats-3": healthy, "pipeline-cluster": completed},
			"worker-cluster":    {"pipeline-cluster": completed, "nats-1": healthy, "scheduler-cluster": healthy},
		}
		for name, deps := range want {
			got := svc(name).DependsOn
			for dep, cond := range deps {
				if got[dep].Condition != cond {
					t.Errorf("%s depends on %s: condition %q, want %q", name, dep, got[dep].Condition, cond)
				}
			}
			if len(got) != len(deps) {
				t.Errorf("%s depends on %d services, want %d", name, len(got), len(deps))
			}
		}
	})

	t.Run("the pipeline, handler and tables are the demo's", func(t *testing.T) {
		for _, tc := range []struct{ pipeline, scheduler, worker string }{
			{"pipeline", "scheduler", "worker"}, {"pipeline-cluster", "scheduler-cluster", "worker-cluster"},
		} {
			pl := svc(tc.pipeline)
			script := strings.Join(pl.Command, " ")
			if !strings.Contains(script, "/demo/"+demo.PipelineFile) {
				t.Errorf("%s does not load /demo/%s: %q", tc.pipeline, demo.PipelineFile, script)
			}
			if hostPath(t, pl, "/demo/"+demo.PipelineFile) != filepath.Join(absRoot(t), "demo", demo.PipelineFile) {
				t.Errorf("%s: /demo is not the project's demo directory", tc.pipeline)
			}
			table := env(pl, "DATABASE") + ".__analysis"
			for _, name := range []string{tc.scheduler, tc.worker} {
				if s := svc(name); s.Command[len(s.Command)-1] != table {
					t.Errorf("%s serves %q, want %q (the table %s loads)", name, s.Command[len(s.Command)-1], table, tc.pipeline)
				}
			}
			w := svc(tc.worker)
			handler := strings.TrimPrefix(flagValue(w.Command, "--exec"), "sh ")
			if _, err := os.Stat(hostPath(t, w, handler)); err != nil {
				t.Errorf("%s: handler %s: %v", tc.worker, handler, err)
			}
		}
	})

	t.Run("every flag of the jetjobs commands exists", func(t *testing.T) {
		for _, s := range p.Services {
			if s.Build == nil {
				continue
			}
			program := s.Command[0]
			help, err := exec.Command(filepath.Join(binDir, program), "--help").CombinedOutput()
			if err != nil {
				t.Errorf("%s: %s --help: %v", s.Name, program, err)
				continue
			}
			for _, arg := range s.Command[1:] {
				if name, ok := strings.CutPrefix(arg, "--"); ok {
					name, _, _ = strings.Cut(name, "=")
					if !regexp.MustCompile(`--` + regexp.QuoteMeta(name) + `[ =\[]`).Match(help) {
						t.Errorf("%s: %s has no flag --%s", s.Name, program, name)
					}
				}
			}
		}
	})
}

// TestDockerfile checks the build the Dockerfile describes: static binaries (CGO_ENABLED=0) of
// the three programs, on a runtime image with /bin/sh for --exec handlers.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "FROM" {
			froms = append(froms, f[1])
		}
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[0], "golang:") || !strings.HasPrefix(froms[len(froms)-1], "alpine:") {
		t.Errorf("want a golang build stage and an alpine runtime stage, got %v", froms)
	}
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/scheduler ./cmd/worker ./cmd/jobsctl"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("the Dockerfile does not say %q", want)
		}
	}

	// CGO_ENABLED=0 builds static binaries; check that every package the programs import
	// builds without cgo (a cgo-only package would be excluded and fail the build). This lists
	// the packages instead of compiling them, which would rebuild the world without cgo.
	list := exec.Command("go", "list", "-deps", "./cmd/scheduler", "./cmd/worker", "./cmd/jobsctl")
	list.Dir = root
	list.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := list.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go list -deps: %v\n%s", err, msg)
	}
}

// serviceConfig reads the jetjobs configuration file a service's JETJOBS_CONFIG names.
func serviceConfig(t *testing.T, s types.ServiceConfig) config.Config {
	t.Helper()
	data, err := os.ReadFile(hostPath(t, s, env(s, config.EnvConfig)))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatalf("%s: %s: %v", s.Name, env(s, config.EnvConfig), err)
	}
	return cfg
}

func env(s types.ServiceConfig, name string) string {
	if v := s.Environment[name]; v != nil {
		return *v
	}
	return ""
}

// hostPath maps a path in a service's container to the host through its bind mounts.
func hostPath(t *testing.T, s types.ServiceConfig, path string) string {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Type != types.VolumeTypeBind {
			continue
		}
		if rest, ok := strings.CutPrefix(path, v.Target+"/"); ok {
			return filepath.Join(v.Source, rest)
		}
	}
	t.Fatalf("%s: %s is not in a bind mount", s.Name, path)
	return ""
}

func absRoot(t *testing.T) string {
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// flagValue returns the argument after name in a command, or "".
func flagValue(command []string, name string) string {
	if i := slices.Index(command, name); i >= 0 && i+1 < len(command) {
		return command[i+1]
	}
	return ""
}
