package devo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// consoleSender writes Devo lines to a writer (the process's stdout by default).
type consoleSender struct {
	w    io.Writer
	host string
	buf  []byte
}

func newConsoleSender(w io.Writer, host string) *consoleSender {
	return &consoleSender{w: w, host: host}
}

func (s *consoleSender) send(ctx context.Context, b *Batch) error {
	for start := 0; start < len(b.Events); {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.buf = s.buf[:0]
		for start < len(b.Events) && len(s.buf) < writeBufferSize {
			ev := &b.Events[start]
			s.buf = AppendLine(s.buf, ev.Time, s.host, b.Tag, ev.Msg)
			start++
		}
		if _, err := s.w.Write(s.buf); err != nil {
			return fmt.Errorf("writing to the console: %w", err)
		}
	}
	if cap(s.buf) > maxScratch {
		s.buf = nil
	}
	return nil
}

func (s *consoleSender) close() error { return nil }

// fileSender appends Devo lines to a file and fsyncs them on every Send. A failed Send truncates
// the file back to where it started, so a retry never leaves a torn line behind; a Send cut short
// by a killed process leaves one, which opening the file drops (see dropTornLine). The file has
// one writer: two processes appending to it could interleave partial lines.
type fileSender struct {
	path string
	host string
	f    *os.File
	bw   *bufio.Writer
	buf  []byte
}

func newFileSender(path, host string) (*fileSender, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: path is required for a file output", ErrBadConfig)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("creating the directory of file %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening file %s: %w", path, err)
	}
	if err := dropTornLine(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("repairing file %s: %w", path, err)
	}
	return &fileSender{path: path, host: host, f: f, bw: bufio.NewWriterSize(f, writeBufferSize)}, nil
}

// dropTornLine truncates f after its last newline. Every line AppendLine writes ends in '\n' and
// a confirmed Send is fsynced whole, so bytes after the last newline can only be the torn end of
// a Send that never returned (the process was killed mid-write). Left in place, the next Send's
// first line would be glued to that fragment and a confirmed event would reach the file corrupt.
// The unconfirmed batch is resent by the shipper, so dropping its fragment loses nothing.
func dropTornLine(f *os.File) error {
	info, err := f.Stat()
	if err != nil {
		return err
	}
	size := info.Size()
	buf := make([]byte, 32<<10)
	end := size
	for end > 0 {
		n := int64(len(buf))
		if end < n {
			n = end
		}
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			end = end - n + int64(i) + 1
			break
		}
		end -= n
	}
	if end == size {
		return nil
	}
	if err := f.Truncate(end); err != nil {
		return err
	}
	return f.Sync()
}

func (s *fileSender) send(ctx context.Context, b *Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	info, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("inspecting file %s: %w", s.path, err)
	}
	start := info.Size()
	err = s.write(b)
	if err == nil {
		if err = s.f.Sync(); err != nil {
			err = fmt.Errorf("syncing file %s: %w", s.path, err)
		}
	}
	if err != nil {
		s.bw.Reset(s.f)
		if terr := s.f.Truncate(start); terr != nil {
			err = errors.Join(err, fmt.Errorf("truncating file %s back to %d bytes: %w", s.path, start, terr))
		}
		return err
	}
	return nil
}

func (s *fileSender) write(b *Batch) error {
	for i := range b.Events {
		ev := &b.Events[i]
		s.buf = AppendLine(s.buf[:0], ev.Time, s.host, b.Tag, ev.Msg)
		if _, err := s.bw.Write(s.buf); err != nil {
			return fmt.Errorf("writing file %s: %w", s.path, err)
		}
	}
	if cap(s.buf) > maxScratch {
		s.buf = nil
	}
	if err := s.bw.Flush(); err != nil {
		return fmt.Errorf("writing file %s: %w", s.path, err)
	}
	return nil
}

func (s *fileSender) close() error {
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("closing file %s: %w", s.path, err)
	}
	return nil
}
