package natstest

import (
	"strings"
	"testing"
)

func TestServersAreBothReachable(t *testing.T) {
	servers := Servers(t)
	if len(servers) != 2 || servers[0].Name != "embedded" || !strings.HasPrefix(servers[1].Name, "external-") {
		t.Fatalf("servers = %+v, want embedded and external-<version>", servers)
	}
	for _, s := range servers {
		nc := Conn(t, s.URL)
		if !nc.IsConnected() {
			t.Errorf("%s at %s: not connected", s.Name, s.URL)
		}
	}
}

func TestExternalProbeSaysWhatToDo(t *testing.T) {
	t.Setenv(EnvURL, "nats://127.0.0.1:1")
	_, msg := probeExternal()
	for _, want := range []string{"nats://127.0.0.1:1", "nats-server -js", EnvURL} {
		if !strings.Contains(msg, want) {
			t.Errorf("probe message %q does not mention %q", msg, want)
		}
	}
}

func TestNameIsUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		n := Name("x")
		if seen[n] {
			t.Fatalf("Name repeated %q", n)
		}
		seen[n] = true
	}
}
