package kafkadev;

import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.errors.TopicExistsException;

/**
 * Waits until a Kafka cluster is whole, for scripts/kafka-dev start:
 *   java kafkadev.Ready BOOTSTRAP BROKERS TOPIC TIMEOUT_SECONDS
 * Whole means: all BROKERS registered and unfenced, and TOPIC (created if missing, one partition
 * per broker, replication factor min(3, BROKERS), min.insync.replicas min(2, BROKERS)) has every
 * partition's ISR full. One JVM polling instead of a command-line tool per try: a JVM start costs
 * seconds on a small machine.
 */
public final class Ready {
    public static void main(String[] args) throws InterruptedException {
        String bootstrap = args[0];
        int brokers = Integer.parseInt(args[1]);
        String topic = args[2];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[3]));
        short rf = (short) Math.min(3, brokers);
        String isr = Integer.toString(Math.min(2, brokers));

        Properties config = new Properties();
        config.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        config.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        config.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        String last = "no answer";
        try (Admin admin = Admin.create(config)) {
            while (System.nanoTime() < deadline) {
                try {
                    int live = admin.describeCluster().nodes().get().size();
                    if (live < brokers) {
                        last = live + " of " + brokers + " brokers in the cluster";
                    } else {
                        try {
                            admin.createTopics(List.of(new NewTopic(topic, brokers, rf)
                                    .configs(Map.of("min.insync.replicas", isr)))).all().get();
                        } catch (ExecutionException e) {
                            if (!(e.getCause() instanceof TopicExistsException)) throw e;
                        }
                        TopicDescription description = admin.describeTopics(List.of(topic))
                                .allTopicNames().get().get(topic);
                        long full = description.partitions().stream()
                                .filter(p -> p.leader() != null && p.isr().size() >= rf).count();
                        if (full == description.partitions().size()) return;
                        last = full + " of " + description.partitions().size() + " partitions fully in sync";
                    }
                } catch (ExecutionException e) {
                    last = String.valueOf(e.getCause());
                }
                Thread.sleep(300);
            }
        }
        System.err.println("cluster not ready: " + last);
        System.exit(1);
    }
}
