package notify_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/notify"
)

func TestSubjects(t *testing.T) {
	for _, c := range []struct{ prefix, table, notify, inserted string }{
		{"", "lab.__analysis", "jetjobs.lab.__analysis.notify", "jetjobs.lab.__analysis.inserted"},
		{"acme.jj", "`my-lab`.`a.b`", "acme.jj.my-2dlab.a-2eb.notify", "acme.jj.my-2dlab.a-2eb.inserted"},
	} {
		n, err := notify.Subject(c.prefix, c.table)
		if err != nil || n != c.notify {
			t.Errorf("Subject(%q, %q) = %q, %v; want %q", c.prefix, c.table, n, err, c.notify)
		}
		i, err := notify.InsertedSubject(c.prefix, c.table)
		if err != nil || i != c.inserted {
			t.Errorf("InsertedSubject(%q, %q) = %q, %v; want %q", c.prefix, c.table, i, err, c.inserted)
		}
	}
	for _, c := range []struct{ prefix, table string }{{"", "analysis"}, {"a b", "lab.x"}, {"", "lab."}, {"a.*", "lab.x"}} {
		if s, err := notify.Subject(c.prefix, c.table); err == nil {
			t.Errorf("Subject(%q, %q) = %q, want an error", c.prefix, c.table, s)
		}
	}
}

func TestDecode(t *testing.T) {
	keys, err := notify.Decode([]byte(` [{"a": 1, "b": "x"}, {"a": 2.5}] `))
	if err != nil || len(keys) != 2 || keys[0]["a"] != json.Number("1") || keys[0]["b"] != "x" || keys[1]["a"] != json.Number("2.5") {
		t.Errorf("Decode: %v, %v", keys, err)
	}
	if keys, err := notify.Decode([]byte(`{"a": 1}`)); err != nil || len(keys) != 1 {
		t.Errorf("one object: %v, %v", keys, err)
	}
	if keys, err := notify.Decode([]byte(`[]`)); err != nil || len(keys) != 0 {
		t.Errorf("no key: %v, %v", keys, err)
	}
	for payload, says := range map[string]string{
		``:                       "not JSON",
		`[{"a": 1}`:              "not JSON",
		`[{"a": 1}] x`:           "after the JSON value",
		`"a"`:                    "want a JSON array",
		`[1]`:                    "key 0: want an object",
		`[{"a": 1}, {}]`:         "key 1 names no column",
		`[{"a": true}]`:          `column "a": want a number or a string, got true`,
		`[{"a": [1]}]`:           "got an array",
		`[{"a": 1, "a": 2}]`:     "given twice",
		`[{"a": null}]`:          "got null",
		`[{"a": {"b": 1}}]`:      "got an object",
		`[{"a": 1}, [{"a": 1}]]`: "key 1: want an object",
	} {
		_, err := notify.Decode([]byte(payload))
		if !errors.Is(err, notify.ErrBadPayload) || !strings.Contains(err.Error(), says) {
			t.Errorf("Decode(%q) = %v, want ErrBadPayload saying %q", payload, err, says)
		}
	}
}

func TestEncode(t *testing.T) {
	data, err := notify.Encode([]map[string]any{{"subject_id": 3, "session": "x"}})
	if err != nil || string(data) != `[{"session":"x","subject_id":3}]` {
		t.Errorf("Encode: %s, %v", data, err)
	}
	for _, keys := range [][]map[string]any{{{}}, {{"a": nil}}, {{"a": []int{1}}}, {{"a": true}}} {
		if _, err := notify.Encode(keys); err == nil {
			t.Errorf("Encode(%v) took it", keys)
		}
	}
}

// Keys splits long lists into messages of MaxKeysPerMessage keys, and returns once the
// server has them.
func TestKeysPublishes(t *testing.T) {
	url := natstest.Embedded(t).ClientURL()
	nc := natstest.Conn(t, url)
	sub, err := nc.SubscribeSync("jetjobs.lab.__analysis.notify")
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]map[string]any, notify.MaxKeysPerMessage+1)
	for i := range keys {
		keys[i] = map[string]any{"id": i}
	}
	if err := notify.Keys(t.Context(), nc, "", "lab.__analysis", keys...); err != nil {
		t.Fatal(err)
	}
	var got int
	for range 2 {
		m, err := sub.NextMsg(5e9)
		if err != nil {
			t.Fatal(err)
		}
		ks, err := notify.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		got += len(ks)
	}
	if got != len(keys) {
		t.Errorf("received %d keys, want %d", got, len(keys))
	}
	if err := notify.Keys(t.Context(), nc, "", "lab.__analysis", map[string]any{}); err == nil {
		t.Error("a key without a column was published")
	}
}
