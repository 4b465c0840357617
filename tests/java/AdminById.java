// The Java admin client looking topics up and deleting them by id
// (TopicCollection.ofTopicIds), which needs Metadata v10+ and DeleteTopics v6 answered by id.
// Usage: java -cp 'kafka jars/*' AdminById.java <bootstrap> <topic>; prints one line per check.
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.TopicCollection;
import org.apache.kafka.common.Uuid;

public class AdminById {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        try (Admin admin = Admin.create(props)) {
            String topic = args[1];
            Uuid id = admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1))).topicId(topic).get();
            Map<Uuid, TopicDescription> byId =
                admin.describeTopics(TopicCollection.ofTopicIds(List.of(id))).allTopicIds().get();
            TopicDescription d = byId.get(id);
            System.out.println("described " + d.name() + " " + d.partitions().size());
            Uuid unknown = Uuid.randomUuid();
            try {
                admin.describeTopics(TopicCollection.ofTopicIds(List.of(unknown))).allTopicIds().get();
                System.out.println("unknown described");
            } catch (ExecutionException e) {
                System.out.println("unknown " + e.getCause().getClass().getSimpleName());
            }
            admin.deleteTopics(TopicCollection.ofTopicIds(List.of(id))).all().get();
            System.out.println("deleted " + !admin.listTopics().names().get().contains(topic));
        }
    }
}
