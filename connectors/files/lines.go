package files

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// lineReader splits a stream into lines in bounded memory. Unlike
// bufio.Scanner it survives a line that is too long: the line is skipped
// up to its end and reported, and reading goes on with the next one.
type lineReader struct {
	br  *bufio.Reader
	max int
	// n is the number of the line returned last (1-based).
	n int64
	// long accumulates a line that did not fit in br's buffer.
	long []byte
}

// errLineTooLong is reported (inside a LineError) for a line over the limit.
var errLineTooLong = errors.New("line too long")

func newLineReader(r io.Reader, bufSize, maxLine int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, bufSize), max: maxLine}
}

// next returns the next line without its "\n" or "\r\n" and its number.
// The bytes are valid until the following call. A line over the limit is
// returned as an error wrapping errLineTooLong, with its number; any other
// error is the stream's and ends the reading. At the end it returns io.EOF.
func (l *lineReader) next() ([]byte, int64, error) {
	l.long = l.long[:0]
	tooLong := false
	for {
		chunk, err := l.br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull && err != io.EOF {
			return nil, l.n, fmt.Errorf("read line %d: %w", l.n+1, err)
		}
		if err == io.EOF && len(chunk) == 0 && len(l.long) == 0 && !tooLong {
			return nil, l.n, io.EOF
		}
		var line []byte
		if err == nil && len(l.long) == 0 && !tooLong {
			// The common case: the whole line was in the buffer.
			line = chunk
		} else {
			if !tooLong {
				// Two bytes over the limit are kept for a "\r\n" that
				// is trimmed below; past that, stop keeping the bytes
				// and only look for the end of the line.
				if len(l.long)+len(chunk) > l.max+2 {
					tooLong = true
					l.long = l.long[:0]
				} else {
					l.long = append(l.long, chunk...)
				}
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			line = l.long
		}
		l.n++
		line = bytes.TrimSuffix(line, []byte{'\n'})
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if tooLong || len(line) > l.max {
			return nil, l.n, fmt.Errorf("%w: over %d bytes", errLineTooLong, l.max)
		}
		return line, l.n, nil
	}
}
