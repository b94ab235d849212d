package worker

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTailBufferKeepsWholeCharacters(t *testing.T) {
	t.Run("a tail that begins inside a character begins at the next one", func(t *testing.T) {
		b := &tailBuffer{limit: 7}
		b.Write([]byte("x" + strings.Repeat("é", 5))) // 11 bytes: the 7 kept begin inside an é
		if got := b.String(); got != "ééé" {
			t.Fatalf("kept %q, want %q", got, "ééé")
		}
	})
	t.Run("invalid bytes are replaced", func(t *testing.T) {
		b := &tailBuffer{limit: 100}
		b.Write([]byte("bad \xff\xfe byte"))
		if got := b.String(); !utf8.ValidString(got) || got != "bad \uFFFD byte" {
			t.Fatalf("kept %q", got)
		}
	})
}

func TestLastLineIsTheExceptionLine(t *testing.T) {
	for stderr, want := range map[string]string{
		"Traceback (most recent call last):\n  File \"m.py\", line 1\nValueError: no\n": "ValueError: no",
		"ValueError: no\n\n  \n":      "ValueError: no",
		"one line without its end":    "one line without its end",
		"":                            "",
		"\n\n":                        "",
		"  indented: KeyError: 'x'\n": "indented: KeyError: 'x'",
	} {
		if got := lastLine(stderr); got != want {
			t.Errorf("lastLine(%q) = %q, want %q", stderr, got, want)
		}
	}
}
