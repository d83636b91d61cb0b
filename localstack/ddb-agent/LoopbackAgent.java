// Java agent loaded by LocalStack as ddb-local-loader-0.1.jar (-javaagent) when it starts
// DynamoDB Local. DynamoDB Local has no host option and its Jetty connector binds every
// interface; this agent rewrites Jetty's AbstractNetworkConnector.getHost() so that an unset
// host means 127.0.0.1 (or the host given as agent argument / -Dearnings_sync.ddb_bind_host).
package earnings_sync.ddbagent;

import java.io.ByteArrayInputStream;
import java.lang.instrument.ClassFileTransformer;
import java.lang.instrument.Instrumentation;
import java.security.ProtectionDomain;
import javassist.ClassPool;
import javassist.CtClass;
import javassist.CtMethod;
import javassist.LoaderClassPath;

public final class LoopbackAgent implements ClassFileTransformer {
    private static final String TARGET = "org/eclipse/jetty/server/AbstractNetworkConnector";
    private final String host;

    private LoopbackAgent(String host) {
        this.host = host;
    }

    public static void premain(String args, Instrumentation inst) {
        String host = System.getProperty("earnings_sync.ddb_bind_host", "127.0.0.1");
        if (args != null && !args.isEmpty()) {
            host = args;
        }
        if (!host.matches("[0-9A-Za-z.:\\-]+")) {
            System.err.println("ddb-local-loader: ignoring invalid bind host " + host);
            return;
        }
        inst.addTransformer(new LoopbackAgent(host));
    }

    @Override
    public byte[] transform(ClassLoader loader, String name, Class<?> redefined,
                            ProtectionDomain domain, byte[] classfile) {
        if (!TARGET.equals(name)) {
            return null;
        }
        try {
            ClassPool pool = new ClassPool(true);
            if (loader != null) {
                pool.appendClassPath(new LoaderClassPath(loader));
            }
            CtClass cls = pool.makeClass(new ByteArrayInputStream(classfile));
            CtMethod getHost = cls.getDeclaredMethod("getHost");
            getHost.insertAfter("if ($_ == null) { $_ = \"" + host + "\"; }");
            byte[] patched = cls.toBytecode();
            cls.detach();
            return patched;
        } catch (Throwable t) {
            System.err.println("ddb-local-loader: could not patch the Jetty bind host: " + t);
            return null;
        }
    }
}
