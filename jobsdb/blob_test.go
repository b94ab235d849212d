package jobsdb

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEncodeStackLayout(t *testing.T) {
	t.Parallel()
	// datajoint-python: blob.pack("abc") == b"dj0\x00\x05" + (3).to_bytes(8, "little") + b"abc"
	want := []byte("dj0\x00\x05\x03\x00\x00\x00\x00\x00\x00\x00abc")
	if got := EncodeStack("abc"); !bytes.Equal(got, want) {
		t.Fatalf("EncodeStack(abc) = %q, want %q", got, want)
	}
	// The length is of the UTF-8 bytes, not the characters.
	if got := EncodeStack("é"); !bytes.Equal(got, []byte("dj0\x00\x05\x02\x00\x00\x00\x00\x00\x00\x00\xc3\xa9")) {
		t.Fatalf("EncodeStack(é) = %q", got)
	}
	if got := EncodeStack(""); !bytes.Equal(got, []byte("dj0\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00")) {
		t.Fatalf("EncodeStack() = %q", got)
	}
}

func TestEncodeStackCompression(t *testing.T) {
	t.Parallel()
	const header = 4 + 1 + 8 // dj0\0, 0x05, length

	t.Run("a blob of 1000 bytes is not compressed, 1001 bytes is", func(t *testing.T) {
		at := EncodeStack(strings.Repeat("a", 1000-header))
		if len(at) != 1000 || !bytes.HasPrefix(at, []byte("dj0\x00")) {
			t.Fatalf("blob of %d bytes starts %q", len(at), at[:6])
		}
		above := EncodeStack(strings.Repeat("a", 1001-header))
		if !bytes.HasPrefix(above, []byte("ZL123\x00")) {
			t.Fatalf("blob of 1001 bytes not compressed: %q", above[:6])
		}
	})

	t.Run("the compressed form is ZL123, the blob's length, zlib of the whole blob", func(t *testing.T) {
		s := strings.Repeat("  File \"x.py\", line 1, in make\n", 100)
		got := EncodeStack(s)
		if !bytes.HasPrefix(got, []byte("ZL123\x00")) {
			t.Fatalf("not compressed: %q", got[:8])
		}
		plain := append([]byte("dj0\x00\x05"), binary.LittleEndian.AppendUint64(nil, uint64(len(s)))...)
		plain = append(plain, s...)
		if n := binary.LittleEndian.Uint64(got[6:14]); n != uint64(len(plain)) {
			t.Fatalf("header length %d, want %d", n, len(plain))
		}
		r, err := zlib.NewReader(bytes.NewReader(got[14:]))
		if err != nil {
			t.Fatal(err)
		}
		inflated, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(inflated, plain) {
			t.Fatalf("inflated %d bytes (%v), want the %d-byte blob", len(inflated), err, len(plain))
		}
	})

	t.Run("incompressible stacks stay uncompressed", func(t *testing.T) {
		b := make([]byte, 3000)
		rand.New(rand.NewSource(1)).Read(b)
		got := encodeString(string(b)) // EncodeStack would replace the invalid UTF-8
		if !bytes.HasPrefix(got, []byte("dj0\x00\x05")) || len(got) != 3000+header {
			t.Fatalf("blob of %d bytes starts %q", len(got), got[:6])
		}
	})
}

// pythonCompressed is datajoint-python's blob.pack of a 1,097-character traceback: compressed
// by Python's zlib (zlib.compress, level 6), not Go's.
var pythonCompressed = "5a4c313233005604000000000000789cadd2bd0e823010c071065d788a0b932444c06f491c357137ee47b9a17294a62d" +
	"036f6ff50918aee3f5ee37fdbb4f95ac9fabe4ff5e0e15b5a87ad80ca30fe0489109a09019187dc89b14e0a199202bad" +
	"b6c4da50890679f6da6fed9c15f01b4155803630604f711f22e3270e7003350e760ab4e969ce9749b598b41393f662d2" +
	"414c3a8a492731e92c265dc4a4ab5c998291cb555ecb655e2feafc8d3cd1ddb9d135d062172fe25ffa05079162d4"

func TestDecodeStack(t *testing.T) {
	t.Parallel()
	t.Run("round trips, compressed or not", func(t *testing.T) {
		for _, s := range []string{
			"",
			"Traceback (most recent call last):\n  ValueError",
			"ünïcödé 🚀 stack",
			strings.Repeat("x", 89942), // DataJoint's test_long_error_stack
			strings.Repeat("line ", 5000),
		} {
			got, err := DecodeStack(EncodeStack(s))
			if err != nil || got != s {
				t.Fatalf("round trip of %d bytes: %d bytes, %v", len(s), len(got), err)
			}
		}
	})

	t.Run("invalid UTF-8 is stored replaced, so DataJoint can decode every stack", func(t *testing.T) {
		for _, s := range []string{
			"bad \xff\xfe bytes",
			"cut in the middle of \xc3",
			strings.Repeat("\x80é", 2000), // compressed
		} {
			b := EncodeStack(s)
			got, err := DecodeStack(b)
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.ToValidUTF8(s, "\uFFFD"); got != want {
				t.Fatalf("stored %q, want %q", got, want)
			}
			// What DataJoint reads: the string's bytes in the blob must be UTF-8 themselves.
			if !bytes.HasPrefix(b, []byte("ZL123")) && !utf8.Valid(b[13:]) {
				t.Fatalf("the blob holds invalid UTF-8: %q", b[13:])
			}
		}
	})

	t.Run("a blob compressed by DataJoint (Python zlib) decodes", func(t *testing.T) {
		b, _ := hex.DecodeString(pythonCompressed)
		got, err := DecodeStack(b)
		if err != nil {
			t.Fatal(err)
		}
		var want strings.Builder
		want.WriteString("Traceback (most recent call last):\n")
		for i := range 14 {
			fmt.Fprintf(&want, "  File \"/pipeline/analysis.py\", line %d, in make\n    result = compute(key)\n", i)
		}
		want.WriteString("ValueError: bad input\n")
		if got != want.String() {
			t.Fatalf("decoded %q", got)
		}
	})

	t.Run("plain text is returned as is", func(t *testing.T) {
		for _, s := range []string{"Traceback: plain text", "", "dj", "ZL12"} {
			if got, err := DecodeStack([]byte(s)); err != nil || got != s {
				t.Fatalf("DecodeStack(%q) = %q, %v", s, got, err)
			}
		}
	})

	t.Run("corrupt blobs are errors", func(t *testing.T) {
		good := EncodeStack(strings.Repeat("abc", 1000))
		for name, b := range map[string][]byte{
			"wrong length":          []byte("dj0\x00\x05\x09\x00\x00\x00\x00\x00\x00\x00abc"),
			"truncated header":      []byte("dj0\x00\x05\x03\x00"),
			"not a string":          []byte("dj0\x00\x0a\x01\x00\x05"),
			"truncated compression": good[:len(good)/2],
			"compressed length lie": append(append([]byte("ZL123\x00"), binary.LittleEndian.AppendUint64(nil, 5)...), good[14:]...),
			"huge compressed claim": append(append([]byte("ZL123\x00"), binary.LittleEndian.AppendUint64(nil, 1<<62)...), good[14:]...),
			"short compressed":      []byte("ZL123\x00\x01"),
		} {
			if s, err := DecodeStack(b); err == nil {
				t.Errorf("%s: decoded %q", name, s)
			}
		}
	})
}

func FuzzDecodeStack(f *testing.F) {
	f.Add([]byte("plain"))
	f.Add(EncodeStack("abc"))
	f.Add(EncodeStack(strings.Repeat("abc", 1000)))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeStack(b)
		if err != nil {
			return
		}
		if back, err := DecodeStack(EncodeStack(s)); err != nil || back != s {
			t.Fatalf("decoded %q does not round trip: %q, %v", s, back, err)
		}
	})
}
