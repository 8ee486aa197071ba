package proto

import (
	"fmt"

	"github.com/klauspost/compress/s2"
)

// HeaderEncoding is the NATS header that names a chunk message's body encoding. EncodingS2 is an
// AppendChunk encoding compressed with S2; a message without the header is a plain encoding.
//
// Chunks are compressed because JetStream's file store keeps every recently written block in
// memory for ten seconds: the results stream's footprint in the server is its write rate times
// ten seconds, and Darktrace JSON (repeated keys, model names, IP addresses) compresses several
// times over. Compression also divides the bytes that are fsynced and, on a cluster, replicated.
const (
	HeaderEncoding = "Dtf-Encoding"
	EncodingS2     = "s2"
)

// CompressedBound is the capacity CompressChunk needs in dst for an encoding of n bytes (it
// allocates otherwise): a buffer of that size serves for the encoding and for its compression.
func CompressedBound(n int) int { return s2.MaxEncodedLen(n) }

// CompressChunk appends the S2 compression of an AppendChunk encoding to dst[:0] (reusing its
// capacity when it suffices) and returns it.
func CompressChunk(dst, encoded []byte) []byte {
	if n := s2.MaxEncodedLen(len(encoded)); cap(dst) < n {
		dst = make([]byte, n)
	} else {
		dst = dst[:n]
	}
	return s2.Encode(dst, encoded)
}

// ReadChunk decodes a chunk message's body with the encoding its HeaderEncoding names ("" for
// none). Like DecodeChunk, the events' D are sub-slices of the decoded body, which for a
// compressed chunk is a new buffer.
//
// An S2 body is decompressed only when the size it declares is at most MaxChunkBytes, into a
// buffer of exactly that size, and it must decode to exactly that size; otherwise, as for any
// malformed body, the error wraps ErrCorruptChunk. An unknown encoding wraps ErrSchema.
func ReadChunk(data []byte, encoding string, c *Chunk) error {
	_, err := ReadChunkBuf(nil, data, encoding, c)
	return err
}

// ReadChunkBuf is ReadChunk decompressing into buf when its capacity suffices (a new buffer
// otherwise), so that a reader that is done with a chunk's events can reuse the memory for the
// next one. It returns the buffer the events' D point into when it is buf or a new one (nil for
// an uncompressed body, whose events point into data), for the caller to pass again once it no
// longer uses the chunk. It reuses c.Events' capacity too (see DecodeChunk).
func ReadChunkBuf(buf, data []byte, encoding string, c *Chunk) ([]byte, error) {
	switch encoding {
	case "":
		buf = nil
	case EncodingS2:
		n, err := s2.DecodedLen(data)
		if err != nil {
			return buf, fmt.Errorf("decompressing chunk: %w: %w", ErrCorruptChunk, err)
		}
		if n > MaxChunkBytes {
			return buf, fmt.Errorf("decompressing chunk: %w: it claims %d bytes, more than %d", ErrCorruptChunk, n, MaxChunkBytes)
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		// s2.Decode fails unless the block decodes to exactly the n bytes it declared.
		raw, err := s2.Decode(buf[:n], data)
		if err != nil {
			return buf, fmt.Errorf("decompressing chunk: %w: %w", ErrCorruptChunk, err)
		}
		data = raw
	default:
		return buf, fmt.Errorf("chunk encoding %q: %w", encoding, ErrSchema)
	}
	return buf, DecodeChunk(data, c)
}
