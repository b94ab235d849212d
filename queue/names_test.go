package queue

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// unescapeToken inverts escapeToken, failing on anything escapeToken cannot produce.
func unescapeToken(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isPlainByte(c):
			b.WriteByte(c)
		case c == '-' && i+2 < len(s):
			v, err := hex.DecodeString(s[i+1 : i+3])
			if err != nil || s[i+1:i+3] != strings.ToLower(s[i+1:i+3]) || isPlainByte(v[0]) {
				return "", false
			}
			b.WriteByte(v[0])
			i += 2
		default:
			return "", false
		}
	}
	return b.String(), true
}

// splitStreamName inverts streamName for names that were not shortened.
func splitStreamName(name string) ([]string, bool) {
	parts := strings.Split(name, streamNameSeparator)
	if len(parts) != 3 {
		return nil, false
	}
	for i, p := range parts {
		u, ok := unescapeToken(p)
		if !ok {
			return nil, false
		}
		parts[i] = u
	}
	return parts, true
}

func checkSubjectToken(t *testing.T, tok string) {
	t.Helper()
	if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n/\\") {
		t.Fatalf("token %q is not a valid subject token", tok)
	}
}

func TestEscapeToken(t *testing.T) {
	for in, want := range map[string]string{
		"lab":                "lab",
		"__session_analysis": "__session_analysis",
		"my-table":           "my-2dtable",
		"a.b":                "a-2eb",
		"x y":                "x-20y",
		"*":                  "-2a",
		">":                  "-3e",
		"é":                  "-c3-a9",
	} {
		if got := escapeToken(in); got != want {
			t.Errorf("escapeToken(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStreamName(t *testing.T) {
	if got := streamName("jetjobs", "lab", "__session_analysis"); got != "jetjobs--lab--__session_analysis" {
		t.Errorf("streamName = %q", got)
	}
	// The collisions a plain "_" join would have.
	if streamName("jetjobs", "a_b", "c") == streamName("jetjobs", "a", "b_c") {
		t.Error("schema/table split is ambiguous")
	}
	long := strings.Repeat("é", 64)
	a, b := streamName("jetjobs", long, long+"x"), streamName("jetjobs", long, long+"y")
	if len(a) > maxStreamNameLen || a == b {
		t.Errorf("long names: %d bytes, distinct %t", len(a), a != b)
	}
	if strings.ContainsAny(a, ".*> \t\r\n/\\") {
		t.Errorf("long name %q has characters stream names may not", a)
	}
}

func FuzzStreamNameIsInjective(f *testing.F) {
	f.Add("jetjobs", "lab", "__session_analysis")
	f.Add("jetjobs", "a_b", "c")
	f.Add("jetjobs", "a--b", "c")
	f.Add("acme.jobs", "x-2d", "-")
	f.Fuzz(func(t *testing.T, prefix, schema, table string) {
		if prefix == "" || schema == "" || table == "" {
			return
		}
		name := streamName(prefix, schema, table)
		if err := validateStreamNameLikeServer(name); err != nil {
			t.Fatal(err)
		}
		full := escapeToken(prefix) + streamNameSeparator + escapeToken(schema) + streamNameSeparator + escapeToken(table)
		if len(full) <= maxStreamNameLen {
			parts, ok := splitStreamName(name)
			if !ok || parts[0] != prefix || parts[1] != schema || parts[2] != table {
				t.Fatalf("streamName(%q, %q, %q) = %q does not decode back (%q)", prefix, schema, table, name, parts)
			}
		} // else shortened with a hash of the full name: injective up to SHA-256 collisions
		for _, tok := range []string{escapeToken(schema), escapeToken(table)} {
			checkSubjectToken(t, tok)
			back, ok := unescapeToken(tok)
			if !ok {
				t.Fatalf("token %q does not decode", tok)
			}
			if back != schema && back != table {
				t.Fatalf("token %q decodes to %q", tok, back)
			}
		}
	})
}

func validateStreamNameLikeServer(name string) error {
	if name == "" || len(name) > 255 || strings.ContainsAny(name, ".*> \t\r\n/\\") {
		return errors.New("invalid stream name " + name)
	}
	return nil
}

func TestPriorityTokens(t *testing.T) {
	for p := PriorityMin; p <= PriorityMax; p++ {
		tok := priorityToken(p)
		checkSubjectToken(t, tok)
		got, ok := parsePriorityToken(tok)
		if !ok || got != p {
			t.Fatalf("parsePriorityToken(%q) = %d, %t; want %d", tok, got, ok, p)
		}
		subject := "jetjobs.lab.t." + tok + "." + KeyHash([]byte(`{"id":1}`))
		if got, ok := priorityFromSubject(subject); !ok || got != p {
			t.Fatalf("priorityFromSubject(%q) = %d, %t", subject, got, ok)
		}
	}
	for _, tok := range []string{"", "p", "5", "p05", "p+5", "p-0", "p128", "p-129", "px", "P5", "p 5"} {
		if p, ok := parsePriorityToken(tok); ok {
			t.Errorf("parsePriorityToken(%q) = %d, want a refusal", tok, p)
		}
	}
}

func TestKeyHash(t *testing.T) {
	h := KeyHash([]byte(`{"id":1}`))
	if len(h) != 32 || strings.Trim(h, "0123456789abcdef") != "" {
		t.Fatalf("KeyHash = %q, want 32 lowercase hex digits", h)
	}
	if h == KeyHash([]byte(`{"id":2}`)) {
		t.Fatal("two keys share a hash")
	}
}

func TestIsSubjectFull(t *testing.T) {
	full := &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages per subject exceeded"}
	if !isSubjectFull(full) {
		t.Error("the server's per-subject refusal is not recognised")
	}
	for _, err := range []error{
		&jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"},
		&jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum bytes exceeded"},
		jetstream.ErrNoStreamResponse,
		errors.New("maximum messages per subject exceeded"),
	} {
		if isSubjectFull(err) {
			t.Errorf("%v taken for a per-subject refusal", err)
		}
	}
}

func TestReconnectDelay(t *testing.T) {
	for _, attempts := range []int{0, 1, 2, 5, 10, 1000, 1 << 30} {
		d := reconnectDelay(attempts)
		if d <= 0 || d > ReconnectDelayMax {
			t.Errorf("reconnectDelay(%d) = %s, want in (0, %s]", attempts, d, ReconnectDelayMax)
		}
	}
	if first := reconnectDelay(1); first > 2*ReconnectDelayInitial {
		t.Errorf("first reconnect delay %s, want about %s", first, ReconnectDelayInitial)
	}
}

func TestLoopbackHostPort(t *testing.T) {
	for listen, want := range map[string]int{"127.0.0.1:0": -1, "127.0.0.1:4222": 4222, "[::1]:5000": 5000, "localhost:1": 1, "127.1.2.3:9": 9} {
		_, port, err := loopbackHostPort(listen)
		if err != nil || port != want {
			t.Errorf("loopbackHostPort(%q) = %d, %v; want %d", listen, port, err, want)
		}
	}
	for _, listen := range []string{"0.0.0.0:4222", ":4222", "10.0.0.1:4222", "[::]:4222", "nats.example.com:4222"} {
		if _, _, err := loopbackHostPort(listen); !errors.Is(err, ErrNotLoopback) {
			t.Errorf("loopbackHostPort(%q) error = %v, want ErrNotLoopback", listen, err)
		}
	}
	for _, listen := range []string{"127.0.0.1", "127.0.0.1:x", "127.0.0.1:70000", "nonsense"} {
		if _, _, err := loopbackHostPort(listen); !errors.Is(err, ErrBadListen) {
			t.Errorf("loopbackHostPort(%q) error = %v, want ErrBadListen", listen, err)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	if c.Prefix != DefaultPrefix || c.Replicas != 1 || c.AckWait != 30*time.Second || c.MaxAckPending != DefaultMaxAckPending {
		t.Errorf("defaults = %+v", c)
	}
	if c := (Config{MaxAckPending: -5}).withDefaults(); c.MaxAckPending != -1 {
		t.Errorf("negative MaxAckPending = %d, want -1 (unlimited)", c.MaxAckPending)
	}
}
