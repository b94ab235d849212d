package jobsdb

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// DataJoint's blob encoding of a string (datajoint-python blob.py: pack, pack_string):
//
//	"dj0\x00"  protocol
//	0x05       a UTF-8 string
//	uint64 LE  its length in bytes
//	…          the bytes
//
// A blob longer than blobCompressAbove bytes is stored compressed when that is smaller:
//
//	"ZL123\x00" uint64 LE length of the uncompressed blob, then zlib of the whole blob above.
const (
	blobProtocol       = "dj0\x00"
	blobProtocolMatlab = "mYm\x00"
	blobCompressed     = "ZL123\x00"
	blobString         = 0x05
	blobCompressAbove  = 1000
	// maxStackBytes bounds what DecodeStack inflates, against a corrupt or hostile length.
	maxStackBytes = 1 << 30
)

// EncodeStack encodes s in DataJoint's blob encoding (compressed above 1000 bytes when smaller).
// Invalid UTF-8 in s (a handler's raw bytes) is replaced by U+FFFD: DataJoint decodes the
// string as UTF-8, and one undecodable stack would make every error of the table unreadable.
func EncodeStack(s string) []byte { return encodeString(strings.ToValidUTF8(s, "\uFFFD")) }

// encodeString is the blob of s's bytes, whatever they are.
func encodeString(s string) []byte {
	blob := make([]byte, 0, len(blobProtocol)+1+8+len(s))
	blob = append(blob, blobProtocol...)
	blob = append(blob, blobString)
	blob = binary.LittleEndian.AppendUint64(blob, uint64(len(s)))
	blob = append(blob, s...)
	if len(blob) <= blobCompressAbove {
		return blob
	}
	var z bytes.Buffer
	z.WriteString(blobCompressed)
	z.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(blob))))
	w := zlib.NewWriter(&z)
	w.Write(blob) // writes to a bytes.Buffer do not fail
	w.Close()
	if z.Len() < len(blob) {
		return z.Bytes()
	}
	return blob
}

// DecodeStack decodes DataJoint's blob encoding of a string, or returns plain text as is;
// invalid UTF-8 (written by another tool, or by jetjobs before it replaced it) reads as U+FFFD.
//
// Bytes that do not start with a blob header are plain text (a stack written by another
// tool). A blob header followed by something other than a string, or a truncated or corrupt
// blob, is an error.
func DecodeStack(b []byte) (string, error) {
	if bytes.HasPrefix(b, []byte(blobCompressed)) {
		rest := b[len(blobCompressed):]
		if len(rest) < 8 {
			return "", errors.New("jobsdb: decode stack: truncated compressed blob header")
		}
		size := binary.LittleEndian.Uint64(rest)
		if size > maxStackBytes {
			return "", fmt.Errorf("jobsdb: decode stack: compressed blob claims %d bytes", size)
		}
		r, err := zlib.NewReader(bytes.NewReader(rest[8:]))
		if err != nil {
			return "", fmt.Errorf("jobsdb: decode stack: %w", err)
		}
		inflated, err := io.ReadAll(io.LimitReader(r, int64(size)+1))
		if err != nil {
			return "", fmt.Errorf("jobsdb: decode stack: %w", err)
		}
		if uint64(len(inflated)) != size {
			return "", fmt.Errorf("jobsdb: decode stack: compressed blob is %d bytes, its header says %d", len(inflated), size)
		}
		b = inflated
		if !bytes.HasPrefix(b, []byte(blobProtocol)) && !bytes.HasPrefix(b, []byte(blobProtocolMatlab)) {
			return "", errors.New("jobsdb: decode stack: compressed data is not a DataJoint blob")
		}
	}
	if !bytes.HasPrefix(b, []byte(blobProtocol)) && !bytes.HasPrefix(b, []byte(blobProtocolMatlab)) {
		return strings.ToValidUTF8(string(b), "\uFFFD"), nil
	}
	body := b[len(blobProtocol):]
	if len(body) < 9 || body[0] != blobString {
		return "", errors.New("jobsdb: decode stack: the blob does not hold a string")
	}
	n := binary.LittleEndian.Uint64(body[1:9])
	if n != uint64(len(body)-9) {
		return "", fmt.Errorf("jobsdb: decode stack: blob string of %d bytes, header says %d", len(body)-9, n)
	}
	return strings.ToValidUTF8(string(body[9:]), "\uFFFD"), nil
}
