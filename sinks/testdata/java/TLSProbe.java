// TLSProbe connects to host:port with JSSE's default SSLSocketFactory, which takes its
// key store and trust store from the javax.net.ssl.* system properties, completes the
// handshake (the server requires a client certificate), and prints the server's reply.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.SSLSocketFactory;

public class TLSProbe {
    public static void main(String[] args) throws Exception {
        SSLSocketFactory f = (SSLSocketFactory) SSLSocketFactory.getDefault();
        try (SSLSocket s = (SSLSocket) f.createSocket(args[0], Integer.parseInt(args[1]))) {
            s.startHandshake();
            OutputStream out = s.getOutputStream();
            out.write("hello\n".getBytes(StandardCharsets.UTF_8));
            out.flush();
            BufferedReader in = new BufferedReader(new InputStreamReader(s.getInputStream(), StandardCharsets.UTF_8));
            System.out.println(in.readLine());
        }
    }
}
