package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"

	"github.com/klauspost/compress/s2"
)

// allocated returns the bytes f allocates (all goroutines; the tests using it are not parallel).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// s2Claiming returns an S2 block that declares claim decoded bytes, followed by body.
func s2Claiming(claim uint64, body []byte) []byte {
	return append(binary.AppendUvarint(nil, claim), body...)
}

// TestReadChunkS2Bounds checks that a compressed chunk is decompressed only into the size it
// declares, that the size is capped by MaxChunkBytes before anything is allocated (a 6-byte block
// claiming 1 GiB used to allocate 1 GiB), and that a block decoding to another size than it claims
// is refused. Every refusal wraps ErrCorruptChunk.
func TestReadChunkS2Bounds(t *testing.T) {
	c := testChunks()[1]
	good := CompressChunk(nil, AppendChunk(nil, &c))
	n, err := s2.DecodedLen(good)
	if err != nil {
		t.Fatal(err)
	}
	_, hdr := binary.Uvarint(good)
	body := good[hdr:]

	tests := []struct {
		name string
		data []byte
	}{
		{"claims 1 GiB in 6 bytes", s2Claiming(1<<30, []byte{0, 0})},
		{"claims 4 GiB - 1", s2Claiming(1<<32-1, []byte{0})},
		{"claims just over the limit", s2Claiming(MaxChunkBytes+1, []byte{0})},
		{"claims more than it holds", s2Claiming(uint64(n)+1, body)},
		{"claims less than it holds", s2Claiming(uint64(n)-1, body)},
		{"claims far more than it holds", s2Claiming(uint64(n)*4, body)},
		{"bad varint", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"empty", nil},
		{"truncated", good[:len(good)/2]},
	}
	for _, tt := range tests {
		var got Chunk
		var err error
		used := allocated(func() { err = ReadChunk(tt.data, EncodingS2, &got) })
		if !errors.Is(err, ErrCorruptChunk) {
			t.Errorf("%s: ReadChunk = %v; want an error wrapping ErrCorruptChunk", tt.name, err)
		}
		// The honest part of a claim may be allocated; nothing near the lie.
		if limit := uint64(4*n + 1<<20); used > limit {
			t.Errorf("%s: ReadChunk allocated %d bytes for a %d-byte message (limit %d)", tt.name, used, len(tt.data), limit)
		}
	}

	var got Chunk
	if err := ReadChunk(good, EncodingS2, &got); err != nil {
		t.Fatalf("ReadChunk of a good chunk: %v", err)
	}
	if got.SlotID != c.SlotID || len(got.Events) != len(c.Events) || !bytes.Equal(got.Events[1].D, c.Events[1].D) {
		t.Errorf("ReadChunk of a good chunk decoded another chunk")
	}
}

// TestDecodeChunkLyingLengths checks that lengths read from the message are bounded by the bytes
// that follow them: a message claiming a million events but holding one malformed event fails
// without allocating the million events (56 MB) first.
func TestDecodeChunkLyingLengths(t *testing.T) {
	const claimed = 1 << 20
	msg := []byte{0x82, 0xa1, 'v', 0x01, 0xa2, 'e', 'v', 0xdd}
	msg = binary.BigEndian.AppendUint32(msg, claimed)
	msg = append(msg, 0x81, 0xa1, 'k', 0xc1) // 0xc1 is never valid msgpack
	msg = append(msg, make([]byte, claimed)...)
	var c Chunk
	var err error
	used := allocated(func() { err = DecodeChunk(msg, &c) })
	if !errors.Is(err, ErrCorruptChunk) {
		t.Errorf("DecodeChunk = %v; want an error wrapping ErrCorruptChunk", err)
	}
	if used > 1<<20 {
		t.Errorf("DecodeChunk allocated %d bytes to refuse a %d-byte message", used, len(msg))
	}

	// Lengths larger than what is left of the message are refused at the header.
	for _, m := range [][]byte{
		{0x81, 0xa2, 'e', 'v', 0xdd, 0xff, 0xff, 0xff, 0xff},
		{0x81, 0xa2, 'i', 'd', 0xdb, 0x7f, 0xff, 0xff, 0xff, 'x'},
		{0x81, 0xa1, 'x', 0xc6, 0x00, 0x00, 0x01, 0x00, 'x'},
		{0xdf, 0x7f, 0xff, 0xff, 0xff},
	} {
		if err := DecodeChunk(m, &c); !errors.Is(err, ErrCorruptChunk) {
			t.Errorf("DecodeChunk(% x) = %v; want an error wrapping ErrCorruptChunk", m, err)
		}
	}
}

// TestDecodeChunkNestingBounded checks that an unknown key's value nested deeper than maxDepth is
// refused: skipping it recursed once per level, so a message of nested arrays could exhaust the
// goroutine stack (a fatal error, not a recoverable panic) with a few MiB of input.
func TestDecodeChunkNestingBounded(t *testing.T) {
	build := func(depth int) []byte {
		msg := []byte{0x82, 0xa1, 'v', 0x01, 0xa1, 'x'}
		msg = append(msg, bytes.Repeat([]byte{0x91}, depth)...)
		return append(msg, 0xc0)
	}
	var c Chunk
	if err := DecodeChunk(build(maxDepth), &c); err != nil {
		t.Errorf("DecodeChunk of a value nested %d deep: %v", maxDepth, err)
	}
	for _, depth := range []int{maxDepth + 1, 10000} {
		if err := DecodeChunk(build(depth), &c); !errors.Is(err, ErrCorruptChunk) {
			t.Errorf("DecodeChunk of a value nested %d deep = %v; want an error wrapping ErrCorruptChunk", depth, err)
		}
	}
}

// TestDecodeChunkTooLarge checks the hard maximum on plain (uncompressed) chunks.
func TestDecodeChunkTooLarge(t *testing.T) {
	var c Chunk
	if err := ReadChunk(make([]byte, MaxChunkBytes+1), "", &c); !errors.Is(err, ErrCorruptChunk) {
		t.Errorf("ReadChunk of %d plain bytes = %v; want an error wrapping ErrCorruptChunk", MaxChunkBytes+1, err)
	}
}
