package io.privstage.spark;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;
import java.util.Base64;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.crypto.Cipher;
import javax.crypto.Mac;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.keytools.KmsClient;

/**
 * A Parquet KmsClient over privstage's key directory layout (a mounted Kubernetes Secret, or the per-run
 * directory privstage materializes from another KeyProvider).
 *
 * <p>The Hadoop configuration holds only the directory path ({@code privstage.kms.key.dir}). Files:
 * {@code <id>.v<N>} (base64; a plain {@code <id>} is version 1 unless {@code <id>.v1} exists),
 * {@code <id>.v<N>.disabled} disables a version. Keys are read on every call (never cached here).
 *
 * <p>Wrapping (the same in privstage's Python client for pyarrow):
 * <pre>
 * kek      = HKDF-SHA-256(ikm = master key, salt = none, info = "privstage/pme/master/"), 32 bytes
 * wrapped  = "v" + N + ":" + base64(nonce[12] || AES-256-GCM(kek, nonce, aad, key) || tag[16])
 * aad      = UTF-8("privstage/pme/v1/" + master_key_id + ".v" + N)
 * </pre>
 * New keys are wrapped with the highest enabled version; unwrap uses the version named in the wrapped text.
 */
public final class DirectoryKmsClient implements KmsClient {
  public static final String KEY_DIR = "privstage.kms.key.dir";
  private static final Pattern WRAPPED = Pattern.compile("v([1-9][0-9]{0,8}):([A-Za-z0-9+/=]+)");
  private static final byte[] INFO = "privstage/pme/master/".getBytes(StandardCharsets.US_ASCII);

  private Path directory;
  private final SecureRandom random = new SecureRandom();

  @Override
  public void initialize(Configuration conf, String kmsInstanceID, String kmsInstanceURL, String accessToken)
      throws KeyAccessDeniedException {
    String dir = conf.get(KEY_DIR);
    if (dir == null || dir.isEmpty()) {
      throw new KeyAccessDeniedException("privstage kms: " + KEY_DIR + " is not set");
    }
    directory = Paths.get(dir);
    if (!Files.isDirectory(directory)) {
      throw new KeyAccessDeniedException("privstage kms: key directory " + dir + " does not exist");
    }
  }

  @Override
  public String wrapKey(byte[] keyBytes, String masterKeyIdentifier) throws KeyAccessDeniedException {
    int version = currentVersion(masterKeyIdentifier);
    byte[] kek = kek(masterKeyIdentifier, version);
    try {
      byte[] nonce = new byte[12];
      random.nextBytes(nonce);
      Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
      cipher.init(Cipher.ENCRYPT_MODE, new SecretKeySpec(kek, "AES"), new GCMParameterSpec(128, nonce));
      cipher.updateAAD(aad(masterKeyIdentifier, version));
      byte[] sealed = cipher.doFinal(keyBytes);
      byte[] out = ByteBuffer.allocate(12 + sealed.length).put(nonce).put(sealed).array();
      return "v" + version + ":" + Base64.getEncoder().encodeToString(out);
    } catch (GeneralSecurityException e) {
      throw new KeyAccessDeniedException("privstage kms: wrapping with key '" + masterKeyIdentifier + "' failed");
    }
  }

  @Override
  public byte[] unwrapKey(String wrappedKey, String masterKeyIdentifier) throws KeyAccessDeniedException {
    Matcher m = WRAPPED.matcher(wrappedKey == null ? "" : wrappedKey);
    if (!m.matches()) {
      throw new KeyAccessDeniedException(
          "privstage kms: the wrapped key for '" + masterKeyIdentifier + "' is malformed");
    }
    int version = Integer.parseInt(m.group(1));
    byte[] kek = kek(masterKeyIdentifier, version);
    try {
      byte[] data = Base64.getDecoder().decode(m.group(2));
      Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
      cipher.init(Cipher.DECRYPT_MODE, new SecretKeySpec(kek, "AES"), new GCMParameterSpec(128, data, 0, 12));
      cipher.updateAAD(aad(masterKeyIdentifier, version));
      return cipher.doFinal(data, 12, data.length - 12);
    } catch (GeneralSecurityException | IllegalArgumentException e) {
      throw new KeyAccessDeniedException(
          "privstage kms: key '" + masterKeyIdentifier + "' version " + version
              + " does not unwrap this file's key (wrong key or tampered key metadata)");
    }
  }

  private static byte[] aad(String id, int version) {
    return ("privstage/pme/v1/" + id + ".v" + version).getBytes(StandardCharsets.UTF_8);
  }

  private Path file(String id, int version) {
    Path versioned = directory.resolve(id + ".v" + version);
    if (Files.isRegularFile(versioned)) {
      return versioned;
    }
    if (version == 1 && Files.isRegularFile(directory.resolve(id))) {
      return directory.resolve(id);
    }
    return null;
  }

  private boolean enabled(String id, int version) {
    return file(id, version) != null && !Files.exists(directory.resolve(id + ".v" + version + ".disabled"));
  }

  private int currentVersion(String id) throws KeyAccessDeniedException {
    checkId(id);
    Pattern p = Pattern.compile(Pattern.quote(id) + "\\.v([1-9][0-9]{0,8})");
    int best = 0;
    try (DirectoryStream<Path> entries = Files.newDirectoryStream(directory)) {
      for (Path entry : entries) {
        Matcher m = p.matcher(entry.getFileName().toString());
        if (m.matches()) {
          int v = Integer.parseInt(m.group(1));
          if (v > best && enabled(id, v)) {
            best = v;
          }
        }
      }
    } catch (IOException e) {
      throw new KeyAccessDeniedException("privstage kms: cannot list key directory " + directory);
    }
    if (best == 0 && enabled(id, 1)) {
      best = 1;
    }
    if (best == 0) {
      throw new KeyAccessDeniedException("privstage kms: key '" + id + "' not found in " + directory);
    }
    return best;
  }

  private static void checkId(String id) throws KeyAccessDeniedException {
    if (id == null || !id.matches("[A-Za-z0-9][A-Za-z0-9._-]{0,63}") || id.contains("..")) {
      throw new KeyAccessDeniedException("privstage kms: invalid master key id");
    }
  }

  private byte[] kek(String id, int version) throws KeyAccessDeniedException {
    checkId(id);
    if (!enabled(id, version)) {
      throw new KeyAccessDeniedException(
          "privstage kms: key '" + id + "' version " + version + " is missing or disabled in " + directory);
    }
    byte[] master;
    try {
      String text = new String(Files.readAllBytes(file(id, version)), StandardCharsets.US_ASCII);
      master = Base64.getMimeDecoder().decode(text.trim().replace('-', '+').replace('_', '/'));
    } catch (IOException | IllegalArgumentException e) {
      throw new KeyAccessDeniedException("privstage kms: key '" + id + "' version " + version + " is unreadable");
    }
    if (master.length < 32) {
      throw new KeyAccessDeniedException("privstage kms: key '" + id + "' is shorter than 256 bits");
    }
    try {
      Mac mac = Mac.getInstance("HmacSHA256");
      mac.init(new SecretKeySpec(new byte[32], "HmacSHA256"));
      byte[] prk = mac.doFinal(master);
      mac.init(new SecretKeySpec(prk, "HmacSHA256"));
      mac.update(INFO);
      mac.update((byte) 1);
      return mac.doFinal();
    } catch (GeneralSecurityException e) {
      throw new KeyAccessDeniedException("privstage kms: HKDF failed");
    }
  }
}
