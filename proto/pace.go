package proto

import "strings"

// PaceKeyPrefix starts the keys, in BucketRate, of the workers' pacing records.
const PaceKeyPrefix = "pace."

// PaceKey is the key, in BucketRate, of one worker process's Pace for input.
func PaceKey(input, worker string) string { return PaceKeyPrefix + input + "." + worker }

// PaceInput returns the input of a PaceKey, and false for another key. Input names are letters,
// digits, '_' and '-' (never a dot), so the first dot after the prefix ends the input.
func PaceInput(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, PaceKeyPrefix)
	if !ok {
		return "", false
	}
	input, _, ok := strings.Cut(rest, ".")
	return input, ok && input != ""
}

// Pace is one worker process's adaptive pacing of one input, written every few seconds (not per
// request) and deleted when the worker stops: the fleet's pace is the sum over the workers whose
// record is recent (At within a few write periods).
type Pace struct {
	V        int    `msgpack:"v"`
	Worker   string `msgpack:"w"`
	Limit    int    `msgpack:"lim"` // requests the process may have in flight now
	Max      int    `msgpack:"max"` // the limit's upper bound (workers.concurrency)
	InFlight int    `msgpack:"in"`  // requests in flight when written
	FloorMS  int64  `msgpack:"fl"`  // the latency floor observed, ms; 0 before the first answer
	// Ceiling is the input's requests_per_second as this worker has it configured.
	Ceiling float64 `msgpack:"rps"`
	At      int64   `msgpack:"at"` // host time of the write, epoch ms
}

func (m *Pace) version() int { return m.V }
