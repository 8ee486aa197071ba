package proto

import (
	"reflect"
	"testing"

	"github.com/klauspost/compress/s2"
)

// chunkSeeds are encodings of small chunks, by AppendChunk and by the msgpack library.
func chunkSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, c := range []Chunk{
		{V: SchemaVersion, SlotID: "s", Seq: 1},
		{V: SchemaVersion, SlotID: "id", Seq: 1 << 40, Index: 3, Events: []Event{
			{K: "1", T: -1, D: []byte(`{"a":1}`)}, {K: "k", T: 1715000000000, D: []byte("part"), More: true},
			{K: "", T: 128, D: []byte{}},
		}},
	} {
		seeds = append(seeds, AppendChunk(nil, &c))
		std, err := Encode(&c)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, std)
	}
	return seeds
}

// FuzzDecodeChunk checks that DecodeChunk never panics and allocates in proportion to its input,
// that a chunk it accepts survives AppendChunk and DecodeChunk unchanged, and that where the
// msgpack library (Decode) accepts the same bytes both read the same chunk.
func FuzzDecodeChunk(f *testing.F) {
	for _, s := range chunkSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got Chunk
		if err := DecodeChunk(data, &got); err != nil {
			return
		}
		if cap(got.Events) > max(1024, 2*len(data)) {
			t.Fatalf("%d bytes decoded into an events slice of capacity %d", len(data), cap(got.Events))
		}
		var again Chunk
		if err := DecodeChunk(AppendChunk(nil, &got), &again); err != nil {
			t.Fatalf("an accepted chunk does not decode after AppendChunk: %v", err)
		}
		normalize(&got)
		normalize(&again)
		if !reflect.DeepEqual(got, again) {
			t.Fatalf("AppendChunk and DecodeChunk changed an accepted chunk:\n%+v\n%+v", got, again)
		}
		var lib Chunk
		if err := Decode(data, &lib); err != nil {
			return // the hand-written decoder is more lenient (unknown keys of any type, str for bin)
		}
		normalize(&lib)
		if !reflect.DeepEqual(got, lib) {
			t.Fatalf("DecodeChunk and msgpack disagree:\n%+v\n%+v", got, lib)
		}
	})
}

// FuzzReadChunk checks that ReadChunk never panics on an S2 body, never decompresses more than
// MaxChunkBytes, and accepts a body only when it decodes to the size it declares.
func FuzzReadChunk(f *testing.F) {
	for _, s := range chunkSeeds(f) {
		f.Add(CompressChunk(nil, s))
	}
	f.Add([]byte{0x80, 0x80, 0x80, 0x80, 0x04, 0x00}) // claims 1 GiB
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Chunk
		if err := ReadChunk(data, EncodingS2, &c); err != nil {
			return
		}
		n, err := s2.DecodedLen(data)
		if err != nil || n > MaxChunkBytes {
			t.Fatalf("accepted a body declaring %d bytes (%v)", n, err)
		}
		raw, err := s2.Decode(nil, data)
		if err != nil || len(raw) != n {
			t.Fatalf("accepted a body that decodes to %d bytes, not the %d it declares (%v)", len(raw), n, err)
		}
	})
}
