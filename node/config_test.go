package node

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadConfigDefaults(t *testing.T) {
	c, err := LoadConfig(nil, envOf(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":8080" || c.DataDir != "./amarula_data" || c.Cluster != "default" || c.LeaseTTL != 10*time.Second ||
		c.ConnectRate != 20 || !c.SingleNode() || c.RedisURL != "" || c.GossipBind != "0.0.0.0:7946" {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}

func TestLoadConfigEnvAndFlags(t *testing.T) {
	env := map[string]string{
		"AMARULA_LISTEN":         "127.0.0.1:9000",
		"AMARULA_ETCD_ENDPOINTS": "http://127.0.0.1:2379, http://127.0.0.1:2380",
		"AMARULA_ADMIN_KEY":      "0123456789abcdef0123",
		"AMARULA_LEASE_TTL":      "6s",
	}
	c, err := LoadConfig([]string{"--listen", "127.0.0.1:9001", "--connect-rate", "5"}, envOf(env), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9001" {
		t.Errorf("flag should override env: %q", c.Listen)
	}
	if len(c.EtcdEndpoints) != 2 || c.EtcdEndpoints[1] != "http://127.0.0.1:2380" {
		t.Errorf("etcd endpoints: %q", c.EtcdEndpoints)
	}
	if c.LeaseTTL != 6*time.Second || c.ConnectRate != 5 || c.SingleNode() {
		t.Errorf("unexpected: %+v", c)
	}
}

func TestLoadConfigInvalid(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"listen", map[string]string{"AMARULA_LISTEN": "nonsense"}, nil, "AMARULA_LISTEN"},
		{"ttl parse", map[string]string{"AMARULA_LEASE_TTL": "ten"}, nil, "AMARULA_LEASE_TTL"},
		{"ttl range", nil, []string{"--lease-ttl", "1s"}, "AMARULA_LEASE_TTL"},
		{"redis scheme", map[string]string{"AMARULA_REDIS_URL": "http://x"}, nil, "AMARULA_REDIS_URL"},
		{"etcd url", map[string]string{"AMARULA_ETCD_ENDPOINTS": "127.0.0.1:2379", "AMARULA_ADMIN_KEY": "0123456789abcdef"}, nil, "AMARULA_ETCD_ENDPOINTS"},
		{"cluster needs admin key", map[string]string{"AMARULA_ETCD_ENDPOINTS": "http://127.0.0.1:2379"}, nil, "AMARULA_ADMIN_KEY"},
		{"short admin key", map[string]string{"AMARULA_ADMIN_KEY": "short"}, nil, "AMARULA_ADMIN_KEY"},
		{"s3 bucket", map[string]string{"AMARULA_S3_ENDPOINT": "http://127.0.0.1:9000", "AMARULA_S3_BUCKET": " "}, nil, "AMARULA_S3_BUCKET"},
		{"s3 creds", map[string]string{"AMARULA_S3_ENDPOINT": "http://127.0.0.1:9000"}, nil, "AMARULA_S3_ACCESS_KEY"},
		{"whatsapp url", map[string]string{"AMARULA_WHATSAPP_URL": "http://127.0.0.1:1"}, nil, "AMARULA_WHATSAPP_URL"},
		{"whatsapp root key missing", map[string]string{"AMARULA_WHATSAPP_URL": "ws://127.0.0.1:1"}, nil, "AMARULA_WHATSAPP_ROOT_KEY"},
		{"root key hex", map[string]string{"AMARULA_WHATSAPP_ROOT_KEY": "zz"}, nil, "AMARULA_WHATSAPP_ROOT_KEY"},
		{"connect rate", map[string]string{"AMARULA_CONNECT_RATE": "0"}, nil, "AMARULA_CONNECT_RATE"},
		{"node name", map[string]string{"AMARULA_NODE_NAME": "a b"}, nil, "AMARULA_NODE_NAME"},
		{"cluster name", map[string]string{"AMARULA_CLUSTER": "../x"}, nil, "AMARULA_CLUSTER"},
		{"log format", map[string]string{"AMARULA_LOG_FORMAT": "xml"}, nil, "AMARULA_LOG_FORMAT"},
		{"unknown flag", nil, []string{"--nope"}, "nope"},
		{"positional", nil, []string{"extra"}, "unexpected argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig(tc.args, envOf(tc.env), &bytes.Buffer{})
			if err == nil {
				t.Fatal("want error")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q should be one line naming %s", err, tc.want)
			}
		})
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	_, err := LoadConfig([]string{"--help"}, envOf(nil), &out)
	if !errors.Is(err, ErrHelp) {
		t.Fatalf("want ErrHelp, got %v", err)
	}
	for _, s := range settings() {
		if !strings.Contains(out.String(), s.env) || !strings.Contains(out.String(), "--"+s.flag) {
			t.Errorf("--help misses %s / --%s", s.env, s.flag)
		}
	}
	for _, env := range []string{"AMARULA_LISTEN", "AMARULA_DATA_DIR", "AMARULA_NODE_NAME", "AMARULA_CLUSTER", "AMARULA_ETCD_ENDPOINTS",
		"AMARULA_REDIS_URL", "AMARULA_S3_ENDPOINT", "AMARULA_S3_BUCKET", "AMARULA_S3_REGION", "AMARULA_S3_ACCESS_KEY", "AMARULA_S3_SECRET_KEY",
		"AMARULA_GOSSIP_BIND", "AMARULA_GOSSIP_ADVERTISE", "AMARULA_JOIN", "AMARULA_ADVERTISE_URL", "AMARULA_ADMIN_KEY", "AMARULA_LEASE_TTL",
		"AMARULA_CONNECT_RATE", "AMARULA_WHATSAPP_URL"} {
		if !strings.Contains(out.String(), env) {
			t.Errorf("design.md §6 setting %s missing from --help", env)
		}
	}
}
