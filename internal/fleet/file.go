package fleet

import (
	"bytes"
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/dtfleet/dtfleet/internal/config"
)

// File is a configuration file as typed values: the keys the demo, the bench and the tests set,
// in the file's shape. Load writes it as YAML and reads it back with config.Load, so what a
// program builds passes the same validation, defaults and path resolution as a user's file.
// Unset (zero, nil) fields are left out of the file and take their defaults.
type File struct {
	// Comment is written as a leading comment line.
	Comment     string                `yaml:"-"`
	Globals     FileGlobals           `yaml:"globals"`
	NATS        FileNATS              `yaml:"nats"`
	Workers     *FileWorkers          `yaml:"workers,omitempty"`
	Coordinator *FileCoordinator      `yaml:"coordinator,omitempty"`
	Shipper     *FileShipper          `yaml:"shipper,omitempty"`
	Outputs     map[string]FileOutput `yaml:"outputs"`
	Inputs      map[string]FileInput  `yaml:"inputs"`
}

// FileGlobals is the globals section.
type FileGlobals struct {
	ID   string `yaml:"id,omitempty"`
	Name string `yaml:"name,omitempty"`
}

// FileNATS is the nats section.
type FileNATS struct {
	URL      string `yaml:"url,omitempty"`
	StoreDir string `yaml:"store_dir,omitempty"`
	Listen   string `yaml:"listen,omitempty"`
	Replicas int    `yaml:"replicas,omitempty"`
}

// FileWorkers is the workers section.
type FileWorkers struct {
	Concurrency    int `yaml:"concurrency,omitempty"`
	MinConcurrency int `yaml:"min_concurrency,omitempty"`
}

// FileCoordinator is the coordinator section; a nil pointer keeps the default.
type FileCoordinator struct {
	SafetyLagInSeconds *int `yaml:"safety_lag_in_seconds,omitempty"`
	MaxBacklogInMB     int  `yaml:"max_backlog_in_mb,omitempty"`
	LeaseTTLInSeconds  int  `yaml:"lease_ttl_in_seconds,omitempty"`
}

// FileShipper is the shipper section.
type FileShipper struct {
	LeaseTTLInSeconds int `yaml:"lease_ttl_in_seconds,omitempty"`
}

// FileOutput is one output (type file or devo_platform, as the programs use them).
type FileOutput struct {
	Type   string           `yaml:"type"`
	Config FileOutputConfig `yaml:"config"`
}

// FileOutputConfig is an output's config: Path for file outputs, the rest for devo_platform.
type FileOutputConfig struct {
	Path    string `yaml:"path,omitempty"`
	Address string `yaml:"address,omitempty"`
	Port    int    `yaml:"port,omitempty"`
	Chain   string `yaml:"chain,omitempty"`
	Cert    string `yaml:"cert,omitempty"`
	Key     string `yaml:"key,omitempty"`
}

// FileInput is one Darktrace input.
type FileInput struct {
	RequestsPerSecond float64                `yaml:"requests_per_second,omitempty"`
	Credentials       FileCredentials        `yaml:"credentials"`
	Services          map[string]FileService `yaml:"services,omitempty"`
}

// FileCredentials are an input's tokens and instance. They are test tokens here: real ones
// come from the user's file or environment, never from a program.
type FileCredentials struct {
	PublicToken  string `yaml:"public_token"`
	PrivateToken string `yaml:"private_token"`
	Instance     string `yaml:"instance"`
}

// Format prints c with the private token redacted, so that a File in a log or a test failure
// (%v, %+v) shows no token; Marshal writes it as it is.
func (c FileCredentials) Format(f fmt.State, verb rune) {
	c.PrivateToken = config.Secret(c.PrivateToken).String()
	type plain FileCredentials // without this method
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(c))
}

// FileService is one service of an input; the zero value lists it with its defaults.
type FileService struct {
	StartTime              string `yaml:"start_time_in_utc_format,omitempty"`
	LookBackInMinutes      *int   `yaml:"look_back_in_minutes,omitempty"`
	WindowInMinutes        int    `yaml:"override_time_window_interval_in_minutes,omitempty"`
	RequestPeriodInSeconds int    `yaml:"request_period_in_seconds,omitempty"`
	Flatten                *bool  `yaml:"flatten,omitempty"`
}

// Marshal returns f as a YAML document.
func (f *File) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	if f.Comment != "" {
		buf.WriteString("# " + f.Comment + "\n")
	}
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2) // the indentation of the example configurations
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("encoding the configuration: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding the configuration: %w", err)
	}
	return buf.Bytes(), nil
}

// Load writes f to path and loads it with config.Load.
func (f *File) Load(path string) (*config.Config, error) {
	y, err := f.Marshal()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, y, 0o600); err != nil {
		return nil, fmt.Errorf("writing the configuration: %w", err)
	}
	return config.Load(path, config.LoadOptions{})
}

// Ptr returns a pointer to v, for the optional fields of File.
func Ptr[T any](v T) *T { return &v }
