package config

import (
	"os"
	"testing"
)

func BenchmarkParseFull(b *testing.B) {
	data, err := os.ReadFile("testdata/full.good.yaml")
	if err != nil {
		b.Fatal(err)
	}
	opts := testOptions(map[string]string{"DT_PRIVATE_TOKEN": testPrivateToken})
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(data, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseDefinitions(b *testing.B) {
	b.SetBytes(int64(len(embeddedDefinitions)))
	for b.Loop() {
		if _, err := ParseDefinitions(embeddedDefinitions); err != nil {
			b.Fatal(err)
		}
	}
}
