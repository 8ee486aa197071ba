package jsonscan

import (
	"encoding/binary"
	"testing"
)

// TestPlainWord checks the word-at-a-time test against the byte table for every pair of byte
// values at several pairs of positions (borrows between neighbouring bytes included).
func TestPlainWord(t *testing.T) {
	t.Parallel()
	for _, pos := range [][2]int{{0, 1}, {3, 4}, {7, 6}} {
		for b1 := range 256 {
			for b2 := range 256 {
				word := []byte("a\x80\xffzz ~a")
				word[pos[0]], word[pos[1]] = byte(b1), byte(b2)
				want := true
				for _, c := range word {
					want = want && strPlain[c]
				}
				if got := plainWord(binary.LittleEndian.Uint64(word)); got != want {
					t.Fatalf("plainWord(%q) = %v, want %v", word, got, want)
				}
			}
		}
	}
}
